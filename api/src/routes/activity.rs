//! The company's audit log.

use axum::{Json, extract::State};
use nexus_shared::model::ActivityEntry;
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{ApiError, ApiPath, ApiQuery, ErrorBody, limit},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_activity))
}

/// Query of `GET /api/companies/{companyId}/activity`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct ActivityQuery {
    /// At most this many (default 50; above 200 is treated as 200).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// Audit log entries, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ActivityList {
    activity: Vec<ActivityEntry>,
}

/// A company's audit log, newest first (board, or an agent of the company).
#[utoipa::path(get, path = "/api/companies/{companyId}/activity", tag = "activity",
    params(("companyId" = Uuid, Path), ActivityQuery),
    responses((status = 200, body = ActivityList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_activity(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<ActivityQuery>,
) -> Result<Json<ActivityList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    let limit = limit(query.limit, 50, 200)?;
    Ok(Json(ActivityList {
        activity: state.store.activity(company_id, limit).await?,
    }))
}
