//! Pauses with a note and an end, and bulk pause and resume of a company's routines.

use axum::{Json, extract::State};
use chrono::{DateTime, Utc};
use nexus_shared::{
    engine::health::check_pause_end,
    model::{PauseNote, Routine},
    store::{MAX_NAMED_ROUTINES, Pause, RoutineSelector},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    auth::Auth,
    error::{ApiError, ApiJson, ApiPath, ErrorBody, RequestBody, field},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(pause_routines))
        .routes(routes!(resume_routines))
}

/// Body of `POST /api/companies/{companyId}/routines/pause`: exactly one selector.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkPause {
    /// These routines of the company (at most 500).
    #[schema(max_items = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine_ids: Option<Vec<Uuid>>,
    /// The routines assigned to this agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_agent_id: Option<Uuid>,
    /// The routines of this project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    /// At most 500 characters.
    #[schema(value_type = Option<nexus_shared::model::PauseNote>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_note: Option<String>,
    /// In the future, at most a year ahead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
}

/// Body of `POST /api/companies/{companyId}/routines/resume`: exactly one selector.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkResume {
    /// These routines of the company (at most 500).
    #[schema(max_items = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine_ids: Option<Vec<Uuid>>,
    /// The routines assigned to this agent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_agent_id: Option<Uuid>,
    /// The routines of this project.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
}

/// The body of a bulk pause as the API document shows it: exactly one selector (each variant
/// takes no other field), with the pause's note and end. Requests are read as [`BulkPause`],
/// which answers 400 for none or several selectors.
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a description only: never built
pub(crate) enum PauseSelection {
    /// These routines of the company.
    #[serde(rename_all = "camelCase")]
    Routines {
        /// At most 500.
        #[schema(max_items = 500)]
        routine_ids: Vec<Uuid>,
        /// At most 500 characters.
        #[schema(value_type = Option<nexus_shared::model::PauseNote>, inline)]
        pause_note: Option<String>,
        /// In the future, at most a year ahead.
        paused_until: Option<DateTime<Utc>>,
    },
    /// The routines assigned to this agent.
    #[serde(rename_all = "camelCase")]
    Assignee {
        assignee_agent_id: Uuid,
        /// At most 500 characters.
        #[schema(value_type = Option<nexus_shared::model::PauseNote>, inline)]
        pause_note: Option<String>,
        /// In the future, at most a year ahead.
        paused_until: Option<DateTime<Utc>>,
    },
    /// The routines of this project.
    #[serde(rename_all = "camelCase")]
    Project {
        project_id: Uuid,
        /// At most 500 characters.
        #[schema(value_type = Option<nexus_shared::model::PauseNote>, inline)]
        pause_note: Option<String>,
        /// In the future, at most a year ahead.
        paused_until: Option<DateTime<Utc>>,
    },
}

/// The body of a bulk resume as the API document shows it: exactly one selector. Requests are
/// read as [`BulkResume`].
#[derive(Serialize, ToSchema)]
#[serde(untagged)]
#[allow(dead_code)] // a description only: never built
pub(crate) enum ResumeSelection {
    /// These routines of the company.
    #[serde(rename_all = "camelCase")]
    Routines {
        /// At most 500.
        #[schema(max_items = 500)]
        routine_ids: Vec<Uuid>,
    },
    /// The routines assigned to this agent.
    #[serde(rename_all = "camelCase")]
    Assignee { assignee_agent_id: Uuid },
    /// The routines of this project.
    #[serde(rename_all = "camelCase")]
    Project { project_id: Uuid },
}

/// The routines a bulk pause or resume changed.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChangedRoutines {
    routines: Vec<Routine>,
}

/// A pause's note and end, checked (the end against the clock's now).
pub(super) fn pause(
    state: &AppState,
    note: Option<String>,
    until: Option<DateTime<Utc>>,
) -> Result<Pause, ApiError> {
    let note = note
        .map(|n| field("pauseNote", PauseNote::parse(n)))
        .transpose()?
        .map(|n| n.as_str().to_owned());
    if let Some(until) = until {
        field(
            "pausedUntil",
            check_pause_end(until, state.store.clock().now()),
        )?;
    }
    Ok(Pause { note, until })
}

/// The one selector of a bulk pause or resume.
fn selector(
    routine_ids: Option<Vec<Uuid>>,
    assignee_agent_id: Option<Uuid>,
    project_id: Option<Uuid>,
) -> Result<RoutineSelector, ApiError> {
    let selector = match (routine_ids, assignee_agent_id, project_id) {
        (Some(ids), None, None) => {
            if ids.len() > MAX_NAMED_ROUTINES {
                return Err(ApiError::invalid_field(
                    "routineIds",
                    "names at most 500 routines",
                ));
            }
            RoutineSelector::Ids(ids)
        }
        (None, Some(agent), None) => RoutineSelector::Assignee(agent),
        (None, None, Some(project)) => RoutineSelector::Project(project),
        _ => {
            return Err(ApiError::bad_request(
                "invalid_body",
                "give exactly one of routineIds, assigneeAgentId and projectId",
            ));
        }
    };
    Ok(selector)
}

/// Pause the routines a selector matches (board only): the active ones become paused.
#[utoipa::path(post, path = "/api/companies/{companyId}/routines/pause", tag = "routines",
    params(("companyId" = Uuid, Path)), request_body = PauseSelection,
    responses((status = 200, body = ChangedRoutines), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn pause_routines(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BulkPause>,
) -> Result<Json<ChangedRoutines>, ApiError> {
    auth.require_board("pause routines in bulk")?;
    auth.see_company(&state, company_id).await?;
    let selector = selector(body.routine_ids, body.assignee_agent_id, body.project_id)?;
    let pause = pause(&state, body.pause_note, body.paused_until)?;
    let routines = state
        .store
        .set_routines_paused(company_id, selector, Some(pause), auth.0)
        .await?;
    Ok(Json(ChangedRoutines { routines }))
}

/// Resume the routines a selector matches (board only): the paused ones become active,
/// catching up nothing that fell while they were paused.
#[utoipa::path(post, path = "/api/companies/{companyId}/routines/resume", tag = "routines",
    params(("companyId" = Uuid, Path)), request_body = ResumeSelection,
    responses((status = 200, body = ChangedRoutines), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn resume_routines(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<BulkResume>,
) -> Result<Json<ChangedRoutines>, ApiError> {
    auth.require_board("resume routines in bulk")?;
    auth.see_company(&state, company_id).await?;
    let selector = selector(body.routine_ids, body.assignee_agent_id, body.project_id)?;
    let routines = state
        .store
        .set_routines_paused(company_id, selector, None, auth.0)
        .await?;
    Ok(Json(ChangedRoutines { routines }))
}

impl RequestBody for PauseSelection {
    const NULLABLE: &'static [&'static str] = &[];
}

impl RequestBody for ResumeSelection {
    const NULLABLE: &'static [&'static str] = &[];
}

impl RequestBody for BulkPause {
    const NULLABLE: &'static [&'static str] = &[];
}

impl RequestBody for BulkResume {
    const NULLABLE: &'static [&'static str] = &[];
}
