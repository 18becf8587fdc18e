//! Projects and goals: created by the board, readable by the company's agents.

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::model::{Goal, Project, Title};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{ApiError, ApiJson, ApiPath, ErrorBody, Found as _, RequestBody, field},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_project, list_projects))
        .routes(routes!(create_goal, list_goals))
}

/// Body of `POST /api/companies/{companyId}/projects`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateProject {
    /// 1–200 characters.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    pub name: String,
}

/// A list of projects.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ProjectList {
    projects: Vec<Project>,
}

/// Body of `POST /api/companies/{companyId}/goals`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CreateGoal {
    /// 1–200 characters.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    title: String,
}

/// A list of goals.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct GoalList {
    goals: Vec<Goal>,
}

/// Create a project (board).
#[utoipa::path(post, path = "/api/companies/{companyId}/projects", tag = "projects",
    params(("companyId" = Uuid, Path)), request_body = CreateProject,
    responses((status = 201, body = Project), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_project(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateProject>,
) -> Result<(StatusCode, Json<Project>), ApiError> {
    auth.see(company_id, "company")?;
    auth.require_board("create projects")?;
    let name = field("name", Title::parse(body.name))?;
    let project = state
        .store
        .create_project(company_id, name, auth.0)
        .await
        .found("company")?;
    Ok((StatusCode::CREATED, Json(project)))
}

/// List a company's projects (board, or an agent of the company).
#[utoipa::path(get, path = "/api/companies/{companyId}/projects", tag = "projects",
    params(("companyId" = Uuid, Path)),
    responses((status = 200, body = ProjectList), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_projects(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
) -> Result<Json<ProjectList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    Ok(Json(ProjectList {
        projects: state.store.projects(company_id).await?,
    }))
}

/// Create a goal (board).
#[utoipa::path(post, path = "/api/companies/{companyId}/goals", tag = "goals",
    params(("companyId" = Uuid, Path)), request_body = CreateGoal,
    responses((status = 201, body = Goal), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_goal(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateGoal>,
) -> Result<(StatusCode, Json<Goal>), ApiError> {
    auth.see(company_id, "company")?;
    auth.require_board("create goals")?;
    let title = field("title", Title::parse(body.title))?;
    let goal = state
        .store
        .create_goal(company_id, title, auth.0)
        .await
        .found("company")?;
    Ok((StatusCode::CREATED, Json(goal)))
}

/// List a company's goals (board, or an agent of the company).
#[utoipa::path(get, path = "/api/companies/{companyId}/goals", tag = "goals",
    params(("companyId" = Uuid, Path)),
    responses((status = 200, body = GoalList), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_goals(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
) -> Result<Json<GoalList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    Ok(Json(GoalList {
        goals: state.store.goals(company_id).await?,
    }))
}

impl RequestBody for CreateProject {}

impl RequestBody for CreateGoal {}
