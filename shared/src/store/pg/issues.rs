//! Issues and their history.

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::{PgStore, agents::ensure_assignable, company_exists, health::end_waiting_run};
use crate::{
    engine::{dispatch::NewHeartbeat, lifecycle::run_after_issue},
    model::{
        Actor, ActorType, HeartbeatContext, Issue, IssueEvent, IssueEventType, IssueStatus,
        IssueWithEvents, Priority,
    },
    store::{IssueFilter, NewActivity, NewIssue, StoreError, StoreResult, new_id},
};

impl PgStore {
    /// Creates an issue. An issue with an assignee also queues a heartbeat run that wakes the
    /// assignee (context source `assignment`).
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown company; [`StoreError::InvalidReference`] for a
    /// reference outside the company; [`StoreError::Refused`] `agent_not_assignable` for a
    /// terminated assignee; the database failed.
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
        let issue = sqlx::query_as!(
            Issue,
            r#"INSERT INTO issues (id, company_id, title, description, project_id, goal_id,
                                   parent_issue_id, assignee_agent_id, priority, status,
                                   created_at, updated_at)
               VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, 'todo', $10, $10)
               RETURNING id, company_id, title, description, project_id, goal_id, parent_issue_id,
                         assignee_agent_id, priority AS "priority: Priority",
                         status AS "status: IssueStatus", routine_id, origin_run_id,
                         created_at, updated_at"#,
            new_id(),
            company_id,
            new.title.as_str(),
            new.description.as_str(),
            new.project_id,
            new.goal_id,
            new.parent_issue_id,
            new.assignee_agent_id,
            new.priority.as_str(),
            now,
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_reference_violation)?;
        insert_event(
            &mut tx,
            &issue,
            IssueEventType::Created,
            actor,
            json!({}),
            now,
        )
        .await?;
        if let Some(agent_id) = issue.assignee_agent_id {
            NewHeartbeat {
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
            }
            .insert(&mut tx, now)
            .await?;
        }
        NewActivity::issue_created(&issue, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(issue)
    }

    /// One issue.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn issue(&self, id: Uuid) -> StoreResult<Issue> {
        fetch_issue(&mut *self.pool.acquire().await?, id, false).await
    }

    /// One issue with its history, oldest first.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn issue_with_events(&self, id: Uuid) -> StoreResult<IssueWithEvents> {
        let issue = self.issue(id).await?;
        let events = sqlx::query_as!(
            IssueEvent,
            r#"SELECT id, type AS "event_type: IssueEventType", actor_type AS "actor_type: ActorType",
                      actor_id, data, created_at
               FROM issue_events WHERE issue_id = $1 ORDER BY created_at, id"#,
            id,
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(IssueWithEvents { issue, events })
    }

    /// The issues of a company matching `filter`, newest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn issues(&self, company_id: Uuid, filter: IssueFilter) -> StoreResult<Vec<Issue>> {
        if let Some(routine_id) = filter.routine_id {
            return self.routine_issues(company_id, routine_id, filter).await;
        }
        Ok(sqlx::query_as!(
            Issue,
            r#"SELECT id, company_id, title, description, project_id, goal_id, parent_issue_id,
                      assignee_agent_id, priority AS "priority: Priority",
                      status AS "status: IssueStatus", routine_id, origin_run_id, created_at, updated_at
               FROM issues
               WHERE company_id = $1
                 AND ($2::text IS NULL OR status = $2)
                 AND ($3::uuid IS NULL OR assignee_agent_id = $3)
                 AND ($4::uuid IS NULL OR id < $4)
               ORDER BY id DESC
               LIMIT $5"#,
            company_id,
            filter.status.map(IssueStatus::as_str),
            filter.assignee_agent_id,
            filter.before,
            filter.limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// The issues of one routine matching `filter`, newest first: the open ones and the closed
    /// ones each from its own index (`issues_routine_open_newest`, `issues_routine_closed`,
    /// whose conditions are complements), each read newest first up to the page, then merged.
    /// A fire's issue is written only into the small index of open issues.
    async fn routine_issues(
        &self,
        company_id: Uuid,
        routine_id: Uuid,
        filter: IssueFilter,
    ) -> StoreResult<Vec<Issue>> {
        Ok(sqlx::query_as!(
            Issue,
            r#"SELECT id AS "id!", company_id AS "company_id!", title AS "title!",
                      description AS "description!", project_id, goal_id, parent_issue_id,
                      assignee_agent_id, priority AS "priority!: Priority",
                      status AS "status!: IssueStatus", routine_id, origin_run_id,
                      created_at AS "created_at!", updated_at AS "updated_at!"
               FROM ((SELECT * FROM issues
                      WHERE routine_id = $2 AND status NOT IN ('done', 'cancelled')
                        AND company_id = $1
                        AND ($3::text IS NULL OR status = $3)
                        AND ($4::uuid IS NULL OR assignee_agent_id = $4)
                        AND ($5::uuid IS NULL OR id < $5)
                      ORDER BY id DESC
                      LIMIT $6)
                     UNION ALL
                     (SELECT * FROM issues
                      WHERE routine_id = $2 AND status IN ('done', 'cancelled')
                        AND company_id = $1
                        AND ($3::text IS NULL OR status = $3)
                        AND ($4::uuid IS NULL OR assignee_agent_id = $4)
                        AND ($5::uuid IS NULL OR id < $5)
                      ORDER BY id DESC
                      LIMIT $6)) AS routine_issues
               ORDER BY id DESC
               LIMIT $6"#,
            company_id,
            routine_id,
            filter.status.map(IssueStatus::as_str),
            filter.assignee_agent_id,
            filter.before,
            filter.limit,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Sets an issue's status, recording the change in its history. Setting the status it
    /// already has changes nothing.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn set_issue_status(
        &self,
        id: Uuid,
        status: IssueStatus,
        actor: Actor,
    ) -> StoreResult<Issue> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let current = fetch_issue(&mut tx, id, true).await?;
        if current.status == status {
            return Ok(current);
        }
        let issue = sqlx::query_as!(
            Issue,
            r#"UPDATE issues SET status = $2, updated_at = $3 WHERE id = $1
               RETURNING id, company_id, title, description, project_id, goal_id, parent_issue_id,
                         assignee_agent_id, priority AS "priority: Priority",
                         status AS "status: IssueStatus", routine_id, origin_run_id,
                         created_at, updated_at"#,
            id,
            status.as_str(),
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        // The run that created the issue follows it (see `engine::lifecycle`).
        if let (Some(run_id), Some(ending)) = (issue.origin_run_id, run_after_issue(status))
            && let Some(change) = end_waiting_run(&mut tx, run_id, &ending, now).await?
        {
            super::health::settle(&mut tx, &[change], now).await?;
        }
        let change = json!({ "from": current.status, "to": status });
        insert_event(
            &mut tx,
            &issue,
            IssueEventType::StatusChanged,
            actor,
            change.clone(),
            now,
        )
        .await?;
        NewActivity::issue_status_changed(&issue, change, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(issue)
    }
}

async fn fetch_issue(conn: &mut PgConnection, id: Uuid, lock: bool) -> StoreResult<Issue> {
    let issue = if lock {
        sqlx::query_as!(
            Issue,
            r#"SELECT id, company_id, title, description, project_id, goal_id, parent_issue_id,
                      assignee_agent_id, priority AS "priority: Priority",
                      status AS "status: IssueStatus", routine_id, origin_run_id, created_at, updated_at
               FROM issues WHERE id = $1 FOR NO KEY UPDATE"#,
            id,
        )
        .fetch_optional(conn)
        .await?
    } else {
        sqlx::query_as!(
            Issue,
            r#"SELECT id, company_id, title, description, project_id, goal_id, parent_issue_id,
                      assignee_agent_id, priority AS "priority: Priority",
                      status AS "status: IssueStatus", routine_id, origin_run_id, created_at, updated_at
               FROM issues WHERE id = $1"#,
            id,
        )
        .fetch_optional(conn)
        .await?
    };
    issue.ok_or(StoreError::NotFound)
}

async fn insert_event(
    conn: &mut PgConnection,
    issue: &Issue,
    event_type: IssueEventType,
    actor: Actor,
    data: serde_json::Value,
    at: DateTime<Utc>,
) -> StoreResult<()> {
    sqlx::query!(
        "INSERT INTO issue_events (id, company_id, issue_id, type, actor_type, actor_id, data, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        new_id(),
        issue.company_id,
        issue.id,
        event_type.as_str(),
        actor.actor_type().as_str(),
        actor.actor_id(),
        data,
        at,
    )
    .execute(conn)
    .await?;
    Ok(())
}
