//! Agents, their API keys, and the calling agent's own view (`/api/agents/me`).

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::{
    model::{Agent, AgentStatus, HeartbeatRun, HeartbeatStatus, Title, WakeupUrl},
    store::{AgentChanges, WakeupSpec},
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
        .routes(routes!(create_agent, list_agents))
        .routes(routes!(update_agent))
        .routes(routes!(create_key))
        .routes(routes!(revoke_key))
        .routes(routes!(me))
        .routes(routes!(my_heartbeat_runs))
}

/// How an agent is woken: `{"kind": "poll"}` or `{"kind": "http", "url": "https://…"}`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum WakeupRequest {
    /// The agent polls for heartbeat runs.
    Poll {},
    /// Signed POSTs to `url`.
    Http {
        /// An absolute http(s) URL without credentials, at most 2,048 characters.
        #[schema(max_length = 2048, format = "uri")]
        url: String,
    },
}

impl WakeupRequest {
    /// The wake-up, with its URL checked against the outbound address rules unless the
    /// deployment allows private addresses (`NEXUS_ALLOW_PRIVATE_URLS`).
    fn parse(self, allow_private: bool) -> Result<WakeupSpec, ApiError> {
        Ok(match self {
            Self::Poll {} => WakeupSpec::Poll,
            Self::Http { url } => {
                let url = field("wakeup.url", WakeupUrl::parse(&url))?;
                if !allow_private {
                    field(
                        "wakeup.url",
                        nexus_shared::outbound::check_url(url.as_str()),
                    )?;
                }
                WakeupSpec::Http(url)
            }
        })
    }
}

/// Body of `POST /api/companies/{companyId}/agents`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateAgent {
    /// 1–200 characters.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    pub name: String,
    /// Default `{"kind": "poll"}`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wakeup: Option<WakeupRequest>,
}

/// A new agent with its credentials, shown only here.
// No `Debug`: it holds a secret in plaintext.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedAgentBody {
    agent: Agent,
    /// The agent's first API key.
    api_key: String,
    /// The Standard Webhooks secret of an HTTP agent (`whsec_…`), else `null`.
    wakeup_secret: Option<String>,
}

/// A list of agents.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct AgentList {
    agents: Vec<Agent>,
}

/// Body of `PATCH /api/agents/{agentId}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct UpdateAgent {
    /// 1–200 characters.
    #[schema(value_type = Option<nexus_shared::model::Title>, inline)]
    name: Option<String>,
    status: Option<AgentStatus>,
    wakeup: Option<WakeupRequest>,
}

/// An updated agent. `wakeupSecret` is set only when the change switched the agent to HTTP
/// wake-ups and so created its secret (shown this once).
// No `Debug`: it holds a secret in plaintext.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpdatedAgentBody {
    #[serde(flatten)]
    agent: Agent,
    #[serde(skip_serializing_if = "Option::is_none")]
    wakeup_secret: Option<String>,
}

/// A new API key, shown only here.
// No `Debug`: it holds a secret in plaintext.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct KeyBody {
    id: Uuid,
    api_key: String,
}

/// Query of `GET /api/agents/me/heartbeat-runs`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct HeartbeatQuery {
    /// Only runs in this status.
    status: Option<HeartbeatStatus>,
    /// At most this many (default 100, at most 500).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// A list of heartbeat runs.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HeartbeatRunList {
    heartbeat_runs: Vec<HeartbeatRun>,
}

/// Create an agent (board). Returns its first API key, and for an HTTP agent its wake-up secret.
#[utoipa::path(post, path = "/api/companies/{companyId}/agents", tag = "agents",
    params(("companyId" = Uuid, Path)), request_body = CreateAgent,
    responses((status = 201, body = CreatedAgentBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateAgent>,
) -> Result<(StatusCode, Json<CreatedAgentBody>), ApiError> {
    auth.see(company_id, "company")?;
    auth.require_board("create agents")?;
    let name = field("name", Title::parse(body.name))?;
    let wakeup = body
        .wakeup
        .map_or(Ok(WakeupSpec::Poll), |w| w.parse(state.allow_private_urls))?;
    let created = state
        .store
        .create_agent(company_id, name, wakeup, auth.0)
        .await
        .found("company")?;
    let body = CreatedAgentBody {
        agent: created.agent,
        api_key: created.api_key,
        wakeup_secret: created.wakeup_secret,
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// List a company's agents (board, or an agent of the company).
#[utoipa::path(get, path = "/api/companies/{companyId}/agents", tag = "agents",
    params(("companyId" = Uuid, Path)),
    responses((status = 200, body = AgentList), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn list_agents(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
) -> Result<Json<AgentList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    let mut agents = state.store.agents(company_id).await?;
    if !auth.is_board() {
        // Another agent's wake-up URL may carry the receiver's token in its query string.
        agents = agents.into_iter().map(Agent::as_listed_to_agents).collect();
    }
    Ok(Json(AgentList { agents }))
}

/// Update an agent (board). `terminated` is final: any later change is 409.
#[utoipa::path(patch, path = "/api/agents/{agentId}", tag = "agents",
    params(("agentId" = Uuid, Path)), request_body = UpdateAgent,
    responses((status = 200, body = UpdatedAgentBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_agent(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(agent_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateAgent>,
) -> Result<Json<UpdatedAgentBody>, ApiError> {
    let agent = state.store.agent(agent_id).await.found("agent")?;
    auth.see(agent.company_id, "agent")?;
    auth.require_board("update agents")?;
    let changes = AgentChanges {
        name: body
            .name
            .map(|n| field("name", Title::parse(n)))
            .transpose()?,
        status: body.status,
        wakeup: body
            .wakeup
            .map(|w| w.parse(state.allow_private_urls))
            .transpose()?,
    };
    let updated = state
        .store
        .update_agent(agent_id, changes, auth.0)
        .await
        .found("agent")?;
    Ok(Json(UpdatedAgentBody {
        agent: updated.agent,
        wakeup_secret: updated.wakeup_secret,
    }))
}

/// Issue another API key for an agent (board). Older keys keep working until revoked.
#[utoipa::path(post, path = "/api/agents/{agentId}/keys", tag = "agents",
    params(("agentId" = Uuid, Path)),
    responses((status = 201, body = KeyBody), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody)))]
async fn create_key(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(agent_id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<KeyBody>), ApiError> {
    let agent = state.store.agent(agent_id).await.found("agent")?;
    auth.see(agent.company_id, "agent")?;
    auth.require_board("issue agent keys")?;
    let key = state
        .store
        .issue_agent_key(agent_id, auth.0)
        .await
        .found("agent")?;
    Ok((
        StatusCode::CREATED,
        Json(KeyBody {
            id: key.id,
            api_key: key.api_key,
        }),
    ))
}

/// Revoke one of an agent's keys (board). It is refused with 401 from then on.
#[utoipa::path(delete, path = "/api/agents/{agentId}/keys/{keyId}", tag = "agents",
    params(("agentId" = Uuid, Path), ("keyId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn revoke_key(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath((agent_id, key_id)): ApiPath<(Uuid, Uuid)>,
) -> Result<StatusCode, ApiError> {
    let agent = state.store.agent(agent_id).await.found("agent")?;
    auth.see(agent.company_id, "agent")?;
    auth.require_board("revoke agent keys")?;
    state
        .store
        .revoke_agent_key(agent_id, key_id, auth.0)
        .await
        .found("key")?;
    Ok(StatusCode::NO_CONTENT)
}

/// The calling agent.
#[utoipa::path(get, path = "/api/agents/me", tag = "agents",
    responses((status = 200, body = Agent), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn me(auth: Auth, State(state): State<AppState>) -> Result<Json<Agent>, ApiError> {
    let agent_id = auth.require_agent("ask who it is")?;
    Ok(Json(state.store.agent(agent_id).await.found("agent")?))
}

/// The calling agent's heartbeat runs, oldest first.
#[utoipa::path(get, path = "/api/agents/me/heartbeat-runs", tag = "agents", params(HeartbeatQuery),
    responses((status = 200, body = HeartbeatRunList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn my_heartbeat_runs(
    auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<HeartbeatQuery>,
) -> Result<Json<HeartbeatRunList>, ApiError> {
    let agent_id = auth.require_agent("list its heartbeat runs")?;
    let limit = limit(query.limit, 100, 500)?;
    let heartbeat_runs = state
        .store
        .agent_heartbeat_runs(agent_id, query.status, limit)
        .await?;
    Ok(Json(HeartbeatRunList { heartbeat_runs }))
}

impl RequestBody for CreateAgent {}

impl RequestBody for UpdateAgent {}
