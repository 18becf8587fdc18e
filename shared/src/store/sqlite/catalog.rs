//! Companies, projects and goals on SQLite.

use sqlx::SqliteConnection;
use uuid::Uuid;

use super::{SqliteStore, company_exists, record};
use crate::{
    model::{Actor, Company, Goal, Project, Title},
    store::{NewActivity, StoreError, StoreResult, new_id},
};

impl SqliteStore {
    /// See [`crate::store::Storage::create_company`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_company(&self, name: Title, actor: Actor) -> StoreResult<Company> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let company = sqlx::query_as::<_, Company>(
            "INSERT INTO companies (id, name, created_at) VALUES (?1, ?2, ?3)
             RETURNING id, name, created_at",
        )
        .bind(new_id())
        .bind(name.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity::company_created(&company, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(company)
    }

    /// See [`crate::store::Storage::companies`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn companies(&self) -> StoreResult<Vec<Company>> {
        Ok(sqlx::query_as::<_, Company>(
            "SELECT id, name, created_at FROM companies ORDER BY created_at, id",
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::company`].
    ///
    /// # Errors
    /// `NotFound`; the database failed.
    pub async fn company(&self, id: Uuid) -> StoreResult<Company> {
        sqlx::query_as::<_, Company>("SELECT id, name, created_at FROM companies WHERE id = ?1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or(StoreError::NotFound)
    }

    /// See [`crate::store::Storage::create_project`].
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    pub async fn create_project(
        &self,
        company_id: Uuid,
        name: Title,
        actor: Actor,
    ) -> StoreResult<Project> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        let project = sqlx::query_as::<_, Project>(
            "INSERT INTO projects (id, company_id, name, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id, company_id, name, created_at",
        )
        .bind(new_id())
        .bind(company_id)
        .bind(name.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity::project_created(company_id, &project, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(project)
    }

    /// See [`crate::store::Storage::projects`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn projects(&self, company_id: Uuid) -> StoreResult<Vec<Project>> {
        Ok(sqlx::query_as::<_, Project>(
            "SELECT id, company_id, name, created_at FROM projects
             WHERE company_id = ?1 ORDER BY created_at, id",
        )
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// See [`crate::store::Storage::create_goal`].
    ///
    /// # Errors
    /// `NotFound` (company); the database failed.
    pub async fn create_goal(
        &self,
        company_id: Uuid,
        title: Title,
        actor: Actor,
    ) -> StoreResult<Goal> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        if !company_exists(&mut tx, company_id).await? {
            return Err(StoreError::NotFound);
        }
        let goal = sqlx::query_as::<_, Goal>(
            "INSERT INTO goals (id, company_id, title, created_at) VALUES (?1, ?2, ?3, ?4)
             RETURNING id, company_id, title, created_at",
        )
        .bind(new_id())
        .bind(company_id)
        .bind(title.as_str())
        .bind(now)
        .fetch_one(&mut *tx)
        .await?;
        let entry = NewActivity::goal_created(company_id, &goal, actor);
        record(&mut tx, vec![entry], now).await?;
        tx.commit().await?;
        Ok(goal)
    }

    /// See [`crate::store::Storage::goals`].
    ///
    /// # Errors
    /// The database failed.
    pub async fn goals(&self, company_id: Uuid) -> StoreResult<Vec<Goal>> {
        Ok(sqlx::query_as::<_, Goal>(
            "SELECT id, company_id, title, created_at FROM goals
             WHERE company_id = ?1 ORDER BY created_at, id",
        )
        .bind(company_id)
        .fetch_all(&self.pool)
        .await?)
    }
}

/// Checks the references Postgres checks with composite foreign keys: each must name a row of
/// the company (SQLite reports a violated foreign key without saying which).
pub(super) async fn ensure_references(
    conn: &mut SqliteConnection,
    company_id: Uuid,
    project_id: Option<Uuid>,
    goal_id: Option<Uuid>,
    parent_issue_id: Option<Uuid>,
) -> StoreResult<()> {
    let checks = [
        (
            project_id,
            "projectId",
            "SELECT EXISTS (SELECT 1 FROM projects WHERE company_id = ?1 AND id = ?2)",
        ),
        (
            goal_id,
            "goalId",
            "SELECT EXISTS (SELECT 1 FROM goals WHERE company_id = ?1 AND id = ?2)",
        ),
        (
            parent_issue_id,
            "parentIssueId",
            "SELECT EXISTS (SELECT 1 FROM issues WHERE company_id = ?1 AND id = ?2)",
        ),
    ];
    for (id, field, statement) in checks {
        let Some(id) = id else { continue };
        let found = sqlx::query_scalar::<_, bool>(statement)
            .bind(company_id)
            .bind(id)
            .fetch_one(&mut *conn)
            .await?;
        if !found {
            return Err(StoreError::InvalidReference { field });
        }
    }
    Ok(())
}
