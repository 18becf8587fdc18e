//! Heartbeat runs: read one (the board, or an agent of its company), and from the owning
//! agent's side claim (`queued → running`) and finish (`running → succeeded | failed`).

use axum::{Json, extract::State};
use nexus_shared::model::{FinishStatus, HeartbeatRun, Summary};
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
        .routes(routes!(get_heartbeat_run))
        .routes(routes!(claim))
        .routes(routes!(finish))
}

/// Body of `POST /api/heartbeat-runs/{id}/finish`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FinishBody {
    pub status: FinishStatus,
    /// Up to 10,000 characters.
    #[schema(value_type = Option<nexus_shared::model::Summary>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
}

/// Loads a heartbeat run the caller owns: 404 outside the caller's company, 403 for anyone
/// but the owning agent.
async fn owned(
    auth: Auth,
    state: &AppState,
    id: Uuid,
    what: &str,
) -> Result<HeartbeatRun, ApiError> {
    let run = state.store.heartbeat_run(id).await.found("heartbeat run")?;
    auth.see(run.company_id, "heartbeat run")?;
    if !auth.is_agent(run.agent_id) {
        return Err(ApiError::forbidden(format!(
            "only the agent a heartbeat run belongs to may {what} it"
        )));
    }
    Ok(run)
}

/// One heartbeat run (board, or an agent of its company).
#[utoipa::path(get, path = "/api/heartbeat-runs/{id}", tag = "heartbeat-runs",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HeartbeatRun), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_heartbeat_run(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<HeartbeatRun>, ApiError> {
    let run = state.store.heartbeat_run(id).await.found("heartbeat run")?;
    auth.see(run.company_id, "heartbeat run")?;
    Ok(Json(run))
}

/// Claim a queued heartbeat run (its agent): `queued → running`; 409 in any other state.
#[utoipa::path(post, path = "/api/heartbeat-runs/{id}/claim", tag = "heartbeat-runs",
    params(("id" = Uuid, Path)),
    responses((status = 200, body = HeartbeatRun), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn claim(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
) -> Result<Json<HeartbeatRun>, ApiError> {
    owned(auth, &state, id, "claim").await?;
    let run = state.store.claim_heartbeat_run(id, auth.0).await?;
    metrics::counter!("nexus_heartbeat_runs_total", "status" => "running").increment(1);
    Ok(Json(run))
}

/// Finish a running heartbeat run (its agent): `running → succeeded | failed`; 409 otherwise.
#[utoipa::path(post, path = "/api/heartbeat-runs/{id}/finish", tag = "heartbeat-runs",
    params(("id" = Uuid, Path)), request_body = FinishBody,
    responses((status = 200, body = HeartbeatRun), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn finish(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<FinishBody>,
) -> Result<Json<HeartbeatRun>, ApiError> {
    owned(auth, &state, id, "finish").await?;
    let summary = body
        .summary
        .map(|s| field("summary", Summary::parse(s)))
        .transpose()?;
    let run = state
        .store
        .finish_heartbeat_run(id, body.status, summary, auth.0)
        .await?;
    metrics::counter!("nexus_heartbeat_runs_total", "status" => run.status.as_str()).increment(1);
    Ok(Json(run))
}

impl RequestBody for FinishBody {}
