//! Routines: list, read (with triggers), create, update, upcoming fires.

use axum::{Json, extract::State, http::StatusCode};
use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{
    engine::fires::fire_instant,
    model::{
        CatchUpCap, CatchUpPolicy, ConcurrencyPolicy, DEFAULT_CATCH_UP_CAP, Description,
        PauseAfterFailures, Priority, Routine, RoutineStatus, RunTimeout, Title, TriggerConfig,
        UpcomingCount,
    },
    schedule::{CronExpression, Schedule, TimeZone},
    store::{NewRoutine, Pause, RoutineChanges, RoutineFilter},
};
use serde::{Deserialize, Deserializer, Serialize, de::IgnoredAny};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use super::pauses::pause;
use crate::{
    auth::Auth,
    error::{
        ApiError, ApiJson, ApiPath, ApiQuery, ErrorBody, Found as _, RequestBody, field, limit,
    },
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(create_routine, list_routines))
        .routes(routes!(get_routine, update_routine))
        .routes(routes!(upcoming))
}

/// Body of `POST /api/companies/{companyId}/routines`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoutine {
    /// 1–200 characters; `{{date}}` and `{{payload.<key>}}` are substituted in issues.
    #[schema(value_type = nexus_shared::model::Title, inline)]
    pub title: String,
    /// Up to 10,000 characters.
    #[schema(value_type = Option<nexus_shared::model::Description>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// An agent of the company that is not terminated (an agent may only name itself).
    pub assignee_agent_id: Uuid,
    pub project_id: Uuid,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_issue_id: Option<Uuid>,
    /// Default `medium`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// `active` (default) or `paused`; `archived` is 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RoutineStatus>,
    /// Default `coalesce_if_active`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    /// Default `skip_missed`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_policy: Option<CatchUpPolicy>,
    /// 1–100, default 25.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_cap: Option<i64>,
    /// 60–2,592,000: a run whose issue is still open this long after its dispatch fails
    /// (`timed_out`). Default `null` (never).
    #[schema(minimum = 60, maximum = 2_592_000)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_timeout_sec: Option<i64>,
    /// 1–100: the routine pauses itself after this many failed runs in a row. Default `null`
    /// (never).
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_after_failures: Option<i64>,
    /// Not accepted (400): triggers are added with `POST /api/routines/{id}/triggers`.
    #[schema(ignore)]
    #[serde(skip_serializing)]
    pub triggers: Option<IgnoredAny>,
}

/// Deserialises a field that may be absent (outer `None`), `null` (`Some(None)`) or a value.
pub(super) fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(d).map(Some)
}

/// Body of `PATCH /api/routines/{routineId}`: any create field; `null` clears `description`,
/// `goalId`, `parentIssueId`, `runTimeoutSec` and `pauseAfterFailures` (and is 400 for any
/// other field). `pauseNote` and `pausedUntil` come only with `status: "paused"`.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRoutine {
    /// 1–200 characters.
    #[schema(value_type = Option<nexus_shared::model::Title>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Up to 10,000 characters; `null` clears it.
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<nexus_shared::model::Description>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<Option<String>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub assignee_agent_id: Option<Uuid>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub project_id: Option<Uuid>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub goal_id: Option<Option<Uuid>>,
    #[serde(default, deserialize_with = "nullable")]
    #[schema(value_type = Option<Uuid>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent_issue_id: Option<Option<Uuid>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<RoutineStatus>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency_policy: Option<ConcurrencyPolicy>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_policy: Option<CatchUpPolicy>,
    /// 1–100.
    #[schema(minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub catch_up_cap: Option<i64>,
    /// 60–2,592,000, or `null` for none; applies to runs dispatched from now on.
    #[schema(value_type = Option<i64>, minimum = 60, maximum = 2_592_000)]
    #[serde(default, deserialize_with = "crate::error::nullable_whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub run_timeout_sec: Option<Option<i64>>,
    /// 1–100, or `null` for never.
    #[schema(value_type = Option<i64>, minimum = 1, maximum = 100)]
    #[serde(default, deserialize_with = "crate::error::nullable_whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_after_failures: Option<Option<i64>>,
    /// With `status: "paused"`: why, for the people who see it (at most 500 characters).
    #[schema(value_type = Option<nexus_shared::model::PauseNote>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pause_note: Option<String>,
    /// With `status: "paused"`: when the routine becomes active by itself (in the future, at
    /// most a year ahead); without it the pause lasts until resumed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub paused_until: Option<DateTime<Utc>>,
}

/// Query of `GET /api/companies/{companyId}/routines`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct RoutineQuery {
    status: Option<RoutineStatus>,
    project_id: Option<Uuid>,
    assignee_agent_id: Option<Uuid>,
    /// `true`: only routines whose newest finished run failed (`consecutiveFailures` > 0).
    failing: Option<bool>,
    /// Only routines older than this routine id (the previous page's `nextBefore`).
    before: Option<Uuid>,
    /// At most this many (default 100; above 500 is treated as 500).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// A page of routines, newest first.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RoutineList {
    routines: Vec<Routine>,
    /// Pass as `before` for the next page; `null` on the last page.
    next_before: Option<Uuid>,
}

/// Query of `GET /api/routines/{routineId}/upcoming`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct UpcomingQuery {
    /// 1–100, default 10.
    #[param(minimum = 1, maximum = 100)]
    count: Option<i64>,
}

/// One upcoming fire.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct UpcomingFire {
    trigger_id: Uuid,
    /// When it fires: the nominal time plus the trigger's jitter offset.
    at: DateTime<Utc>,
    /// The nominal time (the run's `scheduledFor`).
    scheduled_for: DateTime<Utc>,
}

/// Upcoming fires, soonest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct UpcomingFires {
    fires: Vec<UpcomingFire>,
}

fn cap(value: Option<i64>) -> Result<Option<CatchUpCap>, ApiError> {
    value
        .map(|v| field("catchUpCap", CatchUpCap::parse(v)))
        .transpose()
}

fn timeout(value: Option<i64>) -> Result<Option<RunTimeout>, ApiError> {
    value
        .map(|v| field("runTimeoutSec", RunTimeout::parse(v)))
        .transpose()
}

fn failures(value: Option<i64>) -> Result<Option<PauseAfterFailures>, ApiError> {
    value
        .map(|v| field("pauseAfterFailures", PauseAfterFailures::parse(v)))
        .transpose()
}

/// Create a routine (board, or an agent for itself).
#[utoipa::path(post, path = "/api/companies/{companyId}/routines", tag = "routines",
    params(("companyId" = Uuid, Path)), request_body = CreateRoutine,
    responses((status = 201, body = Routine), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_routine(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateRoutine>,
) -> Result<(StatusCode, Json<Routine>), ApiError> {
    auth.see(company_id, "company")?;
    if body.triggers.is_some() {
        return Err(ApiError::bad_request(
            "invalid_body",
            "triggers are not part of a routine's body; add them with POST /api/routines/{routineId}/triggers",
        ));
    }
    auth.assign_routine_to(body.assignee_agent_id)?;
    let status = body.status.unwrap_or(RoutineStatus::Active);
    if status == RoutineStatus::Archived {
        return Err(ApiError::invalid_field(
            "status",
            "must be active or paused for a new routine",
        ));
    }
    let new = NewRoutine {
        title: field("title", Title::parse(body.title))?,
        description: field(
            "description",
            Description::parse(body.description.unwrap_or_default()),
        )?,
        assignee_agent_id: body.assignee_agent_id,
        project_id: body.project_id,
        goal_id: body.goal_id,
        parent_issue_id: body.parent_issue_id,
        priority: body.priority.unwrap_or_default(),
        status,
        concurrency_policy: body
            .concurrency_policy
            .unwrap_or(ConcurrencyPolicy::CoalesceIfActive),
        catch_up_policy: body.catch_up_policy.unwrap_or(CatchUpPolicy::SkipMissed),
        catch_up_cap: cap(body.catch_up_cap)?.unwrap_or(DEFAULT_CATCH_UP_CAP),
        run_timeout_sec: timeout(body.run_timeout_sec)?,
        pause_after_failures: failures(body.pause_after_failures)?,
    };
    let routine = state
        .store
        .create_routine(company_id, new, auth.0)
        .await
        .found("company")?;
    Ok((StatusCode::CREATED, Json(routine)))
}

/// List a company's routines with their triggers, newest first.
#[utoipa::path(get, path = "/api/companies/{companyId}/routines", tag = "routines",
    params(("companyId" = Uuid, Path), RoutineQuery),
    responses((status = 200, body = RoutineList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn list_routines(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<RoutineQuery>,
) -> Result<Json<RoutineList>, ApiError> {
    auth.see_company(&state, company_id).await?;
    let limit = limit(query.limit, 100, 500)?;
    let filter = RoutineFilter {
        status: query.status,
        project_id: query.project_id,
        assignee_agent_id: query.assignee_agent_id,
        failing: query.failing.unwrap_or(false),
        before: query.before,
        limit,
    };
    let routines = state.store.routines(company_id, filter).await?;
    let full_page = i64::try_from(routines.len()).is_ok_and(|n| n == limit);
    let next_before = if full_page {
        routines.last().map(|r| r.id)
    } else {
        None
    };
    Ok(Json(RoutineList {
        routines,
        next_before,
    }))
}

/// One routine with its triggers (never their secrets).
#[utoipa::path(get, path = "/api/routines/{routineId}", tag = "routines", params(("routineId" = Uuid, Path)),
    responses((status = 200, body = Routine), (status = 401, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn get_routine(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
) -> Result<Json<Routine>, ApiError> {
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    Ok(Json(routine))
}

/// Update a routine (board, or its assignee agent). Archived routines are 409.
#[utoipa::path(patch, path = "/api/routines/{routineId}", tag = "routines", params(("routineId" = Uuid, Path)),
    request_body = UpdateRoutine,
    responses((status = 200, body = Routine), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_routine(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateRoutine>,
) -> Result<Json<Routine>, ApiError> {
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    auth.manage_routine(routine.assignee_agent_id)?;
    if let Some(assignee) = body.assignee_agent_id {
        auth.assign_routine_to(assignee)?;
    }
    let changes = RoutineChanges {
        title: body
            .title
            .map(|t| field("title", Title::parse(t)))
            .transpose()?,
        description: body
            .description
            .map(|d| field("description", Description::parse(d.unwrap_or_default())))
            .transpose()?,
        assignee_agent_id: body.assignee_agent_id,
        project_id: body.project_id,
        goal_id: body.goal_id,
        parent_issue_id: body.parent_issue_id,
        priority: body.priority,
        status: body.status,
        concurrency_policy: body.concurrency_policy,
        catch_up_policy: body.catch_up_policy,
        catch_up_cap: cap(body.catch_up_cap)?,
        run_timeout_sec: body.run_timeout_sec.map(timeout).transpose()?,
        pause_after_failures: body.pause_after_failures.map(failures).transpose()?,
        pause: if body.status == Some(RoutineStatus::Paused) {
            pause(&state, body.pause_note, body.paused_until)?
        } else if body.pause_note.is_some() || body.paused_until.is_some() {
            let name = if body.pause_note.is_some() {
                "pauseNote"
            } else {
                "pausedUntil"
            };
            return Err(ApiError::invalid_field(
                name,
                "is set only with status \"paused\"",
            ));
        } else {
            Pause::default()
        },
    };
    Ok(Json(
        state
            .store
            .update_routine(routine_id, changes, auth.0)
            .await
            .found("routine")?,
    ))
}

/// The next fire times over all enabled schedule triggers, merged and sorted. Empty while the
/// routine is paused or archived.
#[utoipa::path(get, path = "/api/routines/{routineId}/upcoming", tag = "routines",
    params(("routineId" = Uuid, Path), UpcomingQuery),
    responses((status = 200, body = UpcomingFires), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn upcoming(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<UpcomingQuery>,
) -> Result<Json<UpcomingFires>, ApiError> {
    let count = field("count", UpcomingCount::parse(query.count.unwrap_or(10)))?;
    let count = usize::try_from(count.get()).unwrap_or(10);
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    let schedules: Vec<(Uuid, Schedule, i32)> = if routine.status == RoutineStatus::Active {
        routine
            .triggers
            .iter()
            .filter(|t| t.enabled)
            .filter_map(|trigger| match &trigger.config {
                TriggerConfig::Schedule {
                    cron_expression,
                    timezone,
                    jitter_sec,
                    ..
                } => match (
                    CronExpression::parse(cron_expression),
                    TimeZone::parse(timezone),
                ) {
                    (Ok(cron), Ok(zone)) => {
                        Some((trigger.id, Schedule::new(cron, zone), *jitter_sec))
                    }
                    _ => None,
                },
                _ => None,
            })
            .collect()
    } else {
        Vec::new()
    };
    // Computing fire times is CPU work: off the async runtime, and merged so that it costs
    // `count` computations plus one per trigger, not `count` per trigger.
    let now = state.store.clock().now();
    let fires = tokio::task::spawn_blocking(move || merged_fires(&schedules, now, count))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(UpcomingFires { fires }))
}

/// The first `count` fires after `now` over all `schedules` (id, schedule, `jitterSec`),
/// soonest first by real instant (ties by trigger id). A merge: each schedule is asked for
/// one more nominal fire only when that fire could still come before the soonest one found.
/// A real instant is at most `jitterSec` after its nominal time, so fires are taken from a
/// nominal time `jitterSec` before `now` (one that is nominally past may still be ahead), and
/// the soonest pending real instant is final once no schedule's next nominal time precedes it.
fn merged_fires(
    schedules: &[(Uuid, Schedule, i32)],
    now: DateTime<Utc>,
    count: usize,
) -> Vec<UpcomingFire> {
    use std::{cmp::Reverse, collections::BinaryHeap};
    // Each schedule's next nominal time not looked at yet.
    let mut frontier: BinaryHeap<Reverse<(DateTime<Utc>, usize)>> = schedules
        .iter()
        .enumerate()
        .filter_map(|(i, (_, schedule, jitter))| {
            let reach = TimeDelta::seconds(i64::from(*jitter)) + TimeDelta::milliseconds(1);
            let from = now - reach;
            schedule.next_after(from).map(|at| Reverse((at, i)))
        })
        .collect();
    // Fires looked at, by real instant: (real, trigger id, nominal).
    type Pending = Reverse<(DateTime<Utc>, Uuid, DateTime<Utc>)>;
    let mut pending: BinaryHeap<Pending> = BinaryHeap::new();
    let mut fires = Vec::with_capacity(count);
    while fires.len() < count {
        let soonest = pending.peek().map(|Reverse((real, _, _))| *real);
        match frontier.peek() {
            Some(Reverse((nominal, _))) if soonest.is_none_or(|s| *nominal <= s) => {
                let Some(Reverse((nominal, i))) = frontier.pop() else {
                    break;
                };
                let (id, schedule, jitter) = &schedules[i];
                let real = fire_instant(*id, nominal, *jitter);
                if real > now {
                    pending.push(Reverse((real, *id, nominal)));
                }
                if let Some(following) = schedule.next_after(nominal) {
                    frontier.push(Reverse((following, i)));
                }
            }
            _ => {
                let Some(Reverse((at, trigger_id, scheduled_for))) = pending.pop() else {
                    break;
                };
                fires.push(UpcomingFire {
                    trigger_id,
                    at,
                    scheduled_for,
                });
            }
        }
    }
    fires
}

impl RequestBody for CreateRoutine {
    const NULLABLE: &'static [&'static str] = &["description", "goalId", "parentIssueId"];
}

impl RequestBody for UpdateRoutine {
    const NULLABLE: &'static [&'static str] = &[
        "description",
        "goalId",
        "parentIssueId",
        "runTimeoutSec",
        "pauseAfterFailures",
    ];
}
