//! Companies: created by the board; an agent sees only its own.

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::model::{Actor, Company, Title};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Auth,
    error::{ApiError, ApiJson, ErrorBody, Found as _, RequestBody, field},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(create_company, list_companies))
}

/// Body of `POST /api/companies`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCompany {
    /// 1–200 characters.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    pub name: String,
}

/// A list of companies.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct CompanyList {
    companies: Vec<Company>,
}

/// Create a company (board).
#[utoipa::path(post, path = "/api/companies", tag = "companies", request_body = CreateCompany,
    responses((status = 201, body = Company), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_company(
    auth: Auth,
    State(state): State<AppState>,
    ApiJson(body): ApiJson<CreateCompany>,
) -> Result<(StatusCode, Json<Company>), ApiError> {
    auth.require_board("create companies")?;
    let name = field("name", Title::parse(body.name))?;
    let company = state.store.create_company(name, auth.0).await?;
    Ok((StatusCode::CREATED, Json(company)))
}

/// List companies: every company for the board, its own for an agent.
#[utoipa::path(get, path = "/api/companies", tag = "companies",
    responses((status = 200, body = CompanyList), (status = 401, body = ErrorBody)))]
async fn list_companies(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<CompanyList>, ApiError> {
    let companies = match auth.0 {
        Actor::Agent { company_id, .. } => {
            vec![state.store.company(company_id).await.found("company")?]
        }
        Actor::Board { .. } | Actor::System => state.store.companies().await?,
    };
    Ok(Json(CompanyList { companies }))
}

impl RequestBody for CreateCompany {}
