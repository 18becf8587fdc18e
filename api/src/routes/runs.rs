//! Runs: manual runs (with idempotency), a routine's run history, one run.

use axum::{
    Json,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use nexus_shared::{
    model::{IdempotencyKey, Run, RunSource, stored_payload},
    store::{BackfillRange, NewRun},
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
    trace,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(run_routine))
        .routes(routes!(backfill))
        .routes(routes!(list_runs))
        .routes(routes!(get_run))
}

/// Where a manual run comes from.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ManualSource {
    /// A person or agent pressing "run".
    Manual,
    /// A program calling the API (optionally naming an `api` trigger).
    Api,
}

/// Body of `POST /api/routines/{routineId}/run`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunRequest {
    /// Default `manual`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<ManualSource>,
    /// A JSON object, default `{}`.
    #[schema(value_type = Option<Object>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload: Option<serde_json::Map<String, serde_json::Value>>,
    /// 1–255 characters; a repeated key returns the original run.
    #[schema(value_type = Option<nexus_shared::model::IdempotencyKey>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// An `api` trigger of this routine.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<Uuid>,
}

/// Body of `POST /api/routines/{routineId}/backfill`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BackfillRequest {
    /// Start of the range (included).
    pub from: DateTime<Utc>,
    /// End of the range (excluded); not after now.
    pub to: DateTime<Utc>,
    /// Only this schedule trigger of the routine (enabled or not); default every enabled one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger_id: Option<Uuid>,
}

/// The runs a backfill created.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct BackfillResult {
    /// One per fire of the range that had no run, oldest first (`source: "backfill"`,
    /// `catchUp: true`).
    runs: Vec<Run>,
    /// Fires of the range that already had a run, left as they were.
    existing: usize,
}

/// Query of `GET /api/routines/{routineId}/runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RunQuery {
    /// Default 50; above 200 is treated as 200; below 1 is 422.
    #[param(minimum = 1)]
    limit: Option<i64>,
    /// Only runs older than this run id (the previous page's `nextBefore`).
    before: Option<Uuid>,
}

/// A page of runs, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RunList {
    runs: Vec<Run>,
    /// Pass as `before` for the next page; `null` on the last page.
    next_before: Option<Uuid>,
}

/// Run a routine now (board, or its assignee agent). Allowed while paused; 409 when archived.
#[utoipa::path(post, path = "/api/routines/{routineId}/run", tag = "runs",
    params(("routineId" = Uuid, Path)), request_body = RunRequest,
    responses((status = 202, body = Run, description = "Accepted; `Idempotent-Replayed: true` when the key was seen before"),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn run_routine(
    auth: Auth,
    State(state): State<AppState>,
    headers: HeaderMap,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RunRequest>,
) -> Result<Response, ApiError> {
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    auth.manage_routine(routine.assignee_agent_id)?;
    let new = NewRun {
        source: match body.source.unwrap_or(ManualSource::Manual) {
            ManualSource::Manual => RunSource::Manual,
            ManualSource::Api => RunSource::Api,
        },
        trigger_id: body.trigger_id,
        payload: stored_payload(body.payload.unwrap_or_default()),
        idempotency_key: body
            .idempotency_key
            .map(|k| field("idempotencyKey", IdempotencyKey::parse(k)))
            .transpose()?,
        trace_context: Some(trace::context_from(&headers)),
        signature: None,
    };
    let accepted = state
        .store
        .accept_manual_run(routine_id, new, auth.0)
        .await
        .found("routine")?;
    Ok(accepted_response(accepted.run, accepted.replayed))
}

/// Re-run a past range (board, or its assignee agent): one run for every nominal fire of the
/// routine's schedule triggers in `[from, to)` that has no run yet, dispatched oldest first
/// under the routine's concurrency policy. At most 1,000 fires; `from` within the retention
/// period (`NEXUS_RETENTION_DAYS`); 409 when archived.
#[utoipa::path(post, path = "/api/routines/{routineId}/backfill", tag = "runs",
    params(("routineId" = Uuid, Path)), request_body = BackfillRequest,
    responses((status = 202, body = BackfillResult),
              (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn backfill(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BackfillRequest>,
) -> Result<Response, ApiError> {
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    auth.manage_routine(routine.assignee_agent_id)?;
    if body.from >= body.to {
        return Err(ApiError::invalid_field("from", "must be before `to`"));
    }
    let now = state.store.clock().now();
    if body.to > now {
        return Err(ApiError::invalid_field(
            "to",
            "must not be after now: a backfill re-runs the past",
        ));
    }
    // Past the retention period a fire's run may have been deleted; re-running it would make
    // that fire twice.
    if let Some(days) = state.retention_days
        && body.from < nexus_shared::engine::retention::cutoff(now, days)
    {
        return Err(ApiError::invalid_field(
            "from",
            "must be within the retention period (NEXUS_RETENTION_DAYS): older runs may have been deleted",
        ));
    }
    let range = BackfillRange {
        from: body.from,
        to: body.to,
        trigger_id: body.trigger_id,
    };
    let done = state
        .store
        .backfill(routine_id, range, auth.0)
        .await
        .found("routine")?;
    let result = BackfillResult {
        runs: done.runs,
        existing: done.existing,
    };
    Ok((StatusCode::ACCEPTED, Json(result)).into_response())
}

/// 202 with the run, marking a replayed idempotency key.
pub(crate) fn accepted_response(run: Run, replayed: bool) -> Response {
    let mut response = (StatusCode::ACCEPTED, Json(run)).into_response();
    if replayed {
        response
            .headers_mut()
            .insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    response
}

/// A routine's runs, newest first.
#[utoipa::path(get, path = "/api/routines/{routineId}/runs", tag = "runs",
    params(("routineId" = Uuid, Path), RunQuery),
    responses((status = 200, body = RunList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_runs(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<RunQuery>,
) -> Result<Json<RunList>, ApiError> {
    let limit = limit(query.limit, 50, 200)?;
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    let runs = state.store.runs(routine_id, query.before, limit).await?;
    let full_page = i64::try_from(runs.len()).is_ok_and(|n| n == limit);
    let next_before = if full_page {
        runs.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RunList { runs, next_before }))
}

/// One run.
#[utoipa::path(get, path = "/api/routine-runs/{runId}", tag = "runs", params(("runId" = Uuid, Path)),
    responses((status = 200, body = Run), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn get_run(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(run_id): ApiPath<Uuid>,
) -> Result<Json<Run>, ApiError> {
    let run = state.store.run(run_id).await.found("run")?;
    auth.see(run.company_id, "run")?;
    Ok(Json(run))
}

impl RequestBody for RunRequest {}

impl RequestBody for BackfillRequest {}
