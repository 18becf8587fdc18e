//! Companies, projects and goals: the simple resources every routine and issue refers to.

use uuid::Uuid;

use super::{PgStore, company_exists};
use crate::model::{Actor, Company, Goal, Project, Title};
use crate::store::{NewActivity, StoreError, StoreResult, new_id};

impl PgStore {
    /// Creates a company.
    ///
    /// # Errors
    /// The database failed.
    pub async fn create_company(&self, name: Title, actor: Actor) -> StoreResult<Company> {
        let now = self.now();
        let mut tx = self.pool.begin().await?;
        let company = sqlx::query_as!(
            Company,
            "INSERT INTO companies (id, name, created_at) VALUES ($1, $2, $3)
             RETURNING id, name, created_at",
            new_id(),
            name.as_str(),
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        NewActivity::company_created(&company, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(company)
    }

    /// Every company, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn companies(&self) -> StoreResult<Vec<Company>> {
        Ok(sqlx::query_as!(
            Company,
            "SELECT id, name, created_at FROM companies ORDER BY created_at, id"
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// One company.
    ///
    /// # Errors
    /// [`StoreError::NotFound`], or the database failed.
    pub async fn company(&self, id: Uuid) -> StoreResult<Company> {
        sqlx::query_as!(
            Company,
            "SELECT id, name, created_at FROM companies WHERE id = $1",
            id
        )
        .fetch_optional(&self.pool)
        .await?
        .ok_or(StoreError::NotFound)
    }

    /// Creates a project in a company.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown company, or the database failed.
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
        let project = sqlx::query_as!(
            Project,
            "INSERT INTO projects (id, company_id, name, created_at) VALUES ($1, $2, $3, $4)
             RETURNING id, company_id, name, created_at",
            new_id(),
            company_id,
            name.as_str(),
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        NewActivity::project_created(company_id, &project, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(project)
    }

    /// The projects of a company, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn projects(&self, company_id: Uuid) -> StoreResult<Vec<Project>> {
        Ok(sqlx::query_as!(
            Project,
            "SELECT id, company_id, name, created_at FROM projects
             WHERE company_id = $1 ORDER BY created_at, id",
            company_id,
        )
        .fetch_all(&self.pool)
        .await?)
    }

    /// Creates a goal in a company.
    ///
    /// # Errors
    /// [`StoreError::NotFound`] for an unknown company, or the database failed.
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
        let goal = sqlx::query_as!(
            Goal,
            "INSERT INTO goals (id, company_id, title, created_at) VALUES ($1, $2, $3, $4)
             RETURNING id, company_id, title, created_at",
            new_id(),
            company_id,
            title.as_str(),
            now,
        )
        .fetch_one(&mut *tx)
        .await?;
        NewActivity::goal_created(company_id, &goal, actor)
            .record(&mut tx, now)
            .await?;
        tx.commit().await?;
        Ok(goal)
    }

    /// The goals of a company, oldest first.
    ///
    /// # Errors
    /// The database failed.
    pub async fn goals(&self, company_id: Uuid) -> StoreResult<Vec<Goal>> {
        Ok(sqlx::query_as!(
            Goal,
            "SELECT id, company_id, title, created_at FROM goals
             WHERE company_id = $1 ORDER BY created_at, id",
            company_id,
        )
        .fetch_all(&self.pool)
        .await?)
    }
}
