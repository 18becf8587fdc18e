//! Issues: created by the board or an agent of the company; status changed by the board or
//! the assignee agent.

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::{
    model::{Description, Issue, IssueStatus, IssueWithEvents, Priority, Title},
    store::{IssueFilter, NewIssue},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{
        ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, Found as _, RequestBody, field, limit,
    },
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_issue, list_issues))
        .routes(routes!(get_issue, update_issue))
}

/// Body of `POST /api/companies/{companyId}/issues`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateIssue {
    /// 1–200 characters.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    pub title: String,
    /// Up to 10,000 characters.
    #[schema(value_type = Option<nexus_shared::model::Description>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_issue_id: Option<Uuid>,
    /// An agent of the company that is not terminated; it gets a heartbeat run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_agent_id: Option<Uuid>,
    /// Default `medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// Query of `GET /api/companies/{companyId}/issues`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct IssueQuery {
    /// Only issues created by this routine's runs.
    routine_id: Option<Uuid>,
    /// Only issues in this status.
    status: Option<IssueStatus>,
    /// Only issues assigned to this agent.
    assignee_agent_id: Option<Uuid>,
    /// Only issues older than this issue id (the previous page's `nextBefore`).
    before: Option<Uuid>,
    /// At most this many (default 100; above 500 is treated as 500).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// A page of issues, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct IssueList {
    issues: Vec<Issue>,
    /// Pass as `before` to get the next page; `null` on the last page.
    next_before: Option<Uuid>,
}

/// Body of `PATCH /api/issues/{issueId}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateIssue {
    pub status: IssueStatus,
}

/// Create an issue (board, or an agent of the company).
#[utoipa::path(post, path = "/api/companies/{companyId}/issues", tag = "issues",
    params(("companyId" = Uuid, Path)), request_body = CreateIssue,
    responses((status = 201, body = Issue), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_issue(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateIssue>,
) -> Result<(StatusCode, Json<Issue>), ApiError> {
    auth.see(company_id, "company")?;
    let new = NewIssue {
        title: field("title", Title::parse(body.title))?,
        description: field(
            "description",
            Description::parse(body.description.unwrap_or_default()),
        )?,
        project_id: body.project_id,
        goal_id: body.goal_id,
        parent_issue_id: body.parent_issue_id,
        assignee_agent_id: body.assignee_agent_id,
        priority: body.priority.unwrap_or_default(),
    };
    let issue = state
        .store
        .create_issue(company_id, new, auth.0)
        .await
        .found("company")?;
    Ok((StatusCode::CREATED, Json(issue)))
}

/// List a company's issues, newest first (board, or an agent of the company).
#[utoipa::path(get, path = "/api/companies/{companyId}/issues", tag = "issues",
    params(("companyId" = Uuid, Path), IssueQuery),
    responses((status = 200, body = IssueList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_issues(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<IssueQuery>,
) -> Result<Json<IssueList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    let limit = limit(query.limit, 100, 500)?;
    let filter = IssueFilter {
        routine_id: query.routine_id,
        status: query.status,
        assignee_agent_id: query.assignee_agent_id,
        before: query.before,
        limit,
    };
    let issues = state.store.issues(company_id, filter).await?;
    let next_before = (issues.len() as i64 == limit)
        .then(|| issues.last().map(|i| i.id))
        .flatten();
    Ok(Json(IssueList {
        issues,
        next_before,
    }))
}

/// One issue with its history, oldest first (board, or an agent of the company).
#[utoipa::path(get, path = "/api/issues/{issueId}", tag = "issues", params(("issueId" = Uuid, Path)),
    responses((status = 200, body = IssueWithEvents), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_issue(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(issue_id): ApiPath<Uuid>,
) -> Result<Json<IssueWithEvents>, ApiError> {
    let issue = state
        .store
        .issue_with_events(issue_id)
        .await
        .found("issue")?;
    auth.see(issue.issue.company_id, "issue")?;
    Ok(Json(issue))
}

/// Change an issue's status (board, or the assignee agent).
#[utoipa::path(patch, path = "/api/issues/{issueId}", tag = "issues", params(("issueId" = Uuid, Path)),
    request_body = UpdateIssue,
    responses((status = 200, body = Issue), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn update_issue(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(issue_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateIssue>,
) -> Result<Json<Issue>, ApiError> {
    let issue = state.store.issue(issue_id).await.found("issue")?;
    auth.see(issue.company_id, "issue")?;
    if !auth.is_board() && !issue.assignee_agent_id.is_some_and(|a| auth.is_agent(a)) {
        return Err(ApiError::forbidden(
            "only the board or the issue's assignee agent may change its status",
        ));
    }
    Ok(Json(
        state
            .store
            .set_issue_status(issue_id, body.status, auth.0)
            .await
            .found("issue")?,
    ))
}

impl RequestBody for CreateIssue {
    const NULLABLE: &'static [&'static str] = &[
        "description",
        "projectId",
        "goalId",
        "parentIssueId",
        "assigneeAgentId",
    ];
}

impl RequestBody for UpdateIssue {}
