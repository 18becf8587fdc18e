//! What the operator console needs besides the resources: a schedule's preview before it is
//! saved, and the state of the system (leader, queue, fire lateness).

use std::sync::PoisonError;

use axum::{Json, extract::State};
use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_shared::{
    model::BoundedInt,
    schedule::Schedule,
    store::{SchedulerLeader, quantile},
};
use serde::{Deserialize, Serialize};
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    auth::Auth,
    error::{ApiError, ApiQuery, ErrorBody, field},
    routes::triggers::{cron, zone},
    state::AppState,
};

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(schedule_preview))
        .routes(routes!(system_status))
}

/// Query of `GET /api/schedule-preview`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
#[into_params(parameter_in = Query, rename_all = "camelCase")]
pub(crate) struct PreviewQuery {
    /// A 5-field cron expression, as a schedule trigger takes it.
    cron_expression: String,
    /// An IANA time zone (default `UTC`).
    timezone: Option<String>,
    /// How many fires (1–20, default 5).
    #[param(minimum = 1, maximum = 20)]
    count: Option<i64>,
}

/// One previewed fire.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct PreviewFire {
    /// The instant, in UTC.
    at: DateTime<Utc>,
    /// The same instant in the schedule's zone, with its offset.
    local: String,
}

/// A schedule as it would run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SchedulePreview {
    /// The expression in plain language.
    description: String,
    /// The zone it runs in.
    timezone: String,
    /// Its next fires after now (nominal times: a trigger's jitter is added per trigger).
    fires: Vec<PreviewFire>,
}

/// A schedule's plain-language description and next fires, validated exactly as a schedule
/// trigger is (an invalid expression or zone is 422 naming the field). Any caller with a token.
#[utoipa::path(get, path = "/api/schedule-preview", tag = "triggers", params(PreviewQuery),
    responses((status = 200, body = SchedulePreview), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn schedule_preview(
    _auth: Auth,
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<PreviewQuery>,
) -> Result<Json<SchedulePreview>, ApiError> {
    let count = field(
        "count",
        BoundedInt::<1, 20>::parse(query.count.unwrap_or(5)),
    )?;
    let cron = cron(&query.cron_expression)?;
    let zone = zone(query.timezone.as_deref().unwrap_or("UTC"))?;
    let now = state.store.clock().now();
    let description = cron.describe();
    let schedule = Schedule::new(cron, zone);
    let count = usize::try_from(count.get()).unwrap_or(5);
    // Fire times are CPU work: off the async runtime.
    let fires = tokio::task::spawn_blocking(move || {
        schedule
            .fires_after(now)
            .take(count)
            .map(|at| PreviewFire {
                at,
                local: zone.local_rfc3339(at),
            })
            .collect()
    })
    .await
    .map_err(ApiError::internal)?;
    Ok(Json(SchedulePreview {
        description,
        timezone: zone.name().to_owned(),
        fires,
    }))
}

/// Jobs of one kind in one state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueRow {
    kind: String,
    /// `queued` (due now) or `running`.
    state: String,
    count: i64,
    /// Seconds since the oldest of them became due (queued) or was leased (running).
    oldest_age_sec: f64,
}

/// The queue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct QueueStatus {
    /// Jobs due and not yet taken.
    waiting: i64,
    /// Seconds the oldest waiting job has waited (0 when none).
    oldest_waiting_age_sec: f64,
    /// By kind and state.
    jobs: Vec<QueueRow>,
}

/// Fire lateness over one minute or the whole window.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LatenessFigures {
    /// The minute's start (absent for the whole window).
    #[serde(skip_serializing_if = "Option::is_none")]
    minute: Option<DateTime<Utc>>,
    /// On-time schedule fires whose instant fell in it.
    fires: i64,
    /// How many of them the figures are computed from (the first of each minute).
    sampled: usize,
    /// Median seconds from a fire's instant to its heartbeat run.
    p50_sec: Option<f64>,
    /// 99th percentile of the same.
    p99_sec: Option<f64>,
}

/// Fire lateness over the last hour.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct LatenessStatus {
    /// The window (3600).
    window_sec: i64,
    /// The whole window.
    total: LatenessFigures,
    /// Each minute of it, oldest first (the current minute last).
    minutes: Vec<LatenessFigures>,
}

/// The state of the system.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SystemStatus {
    scheduler: SchedulerLeader,
    queue: QueueStatus,
    lateness: LatenessStatus,
}

/// Fires sampled per minute.
pub(crate) const SAMPLE_PER_MINUTE: i64 = 1_000;
/// A minute's figures are kept once it ended this long ago (a fire's heartbeat run is made by
/// then unless the queue is far behind).
const SETTLED_AFTER: TimeDelta = TimeDelta::minutes(5);

/// Which scheduler leads (and since when, with its epoch), the queue's depth and oldest
/// waiting job, and how late the last hour's schedule fires woke their agents — overall and
/// per minute, from the first 1,000 fires of each minute. Board only.
#[utoipa::path(get, path = "/api/system", tag = "system",
    responses((status = 200, body = SystemStatus), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody)))]
async fn system_status(
    auth: Auth,
    State(state): State<AppState>,
) -> Result<Json<SystemStatus>, ApiError> {
    auth.require_board("the system status")?;
    let scheduler = state.store.scheduler_leader().await?;
    let depth = state.store.queue_status().await?;
    let waiting = depth.iter().filter(|d| d.state == "queued");
    let queue = QueueStatus {
        waiting: waiting.clone().map(|d| d.count).sum(),
        oldest_waiting_age_sec: waiting.map(|d| d.oldest_age_secs).fold(0.0, f64::max),
        jobs: depth
            .into_iter()
            .map(|d| QueueRow {
                kind: d.kind,
                state: d.state,
                count: d.count,
                oldest_age_sec: d.oldest_age_secs,
            })
            .collect(),
    };
    let lateness = lateness(&state).await?;
    Ok(Json(SystemStatus {
        scheduler,
        queue,
        lateness,
    }))
}

async fn lateness(state: &AppState) -> Result<LatenessStatus, ApiError> {
    let now = state.store.clock().now();
    let current = now
        .duration_trunc(TimeDelta::minutes(1))
        .map_err(ApiError::internal)?;
    let first = current - TimeDelta::minutes(59);
    let mut minutes = Vec::with_capacity(60);
    let mut all = Vec::new();
    let mut fires = 0;
    for i in 0..60 {
        let minute = first + TimeDelta::minutes(i);
        let kept = state
            .lateness
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&minute)
            .cloned();
        let read = match kept {
            Some(kept) => kept,
            None => {
                let read = state
                    .store
                    .fire_lateness(minute, minute + TimeDelta::minutes(1), SAMPLE_PER_MINUTE)
                    .await?;
                if minute + TimeDelta::minutes(1) + SETTLED_AFTER <= now {
                    let mut cache = state
                        .lateness
                        .0
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner);
                    cache.retain(|at, _| *at >= first);
                    cache.insert(minute, read.clone());
                }
                read
            }
        };
        minutes.push(figures(Some(minute), read.fires, &read.lateness));
        fires += read.fires;
        all.extend(read.lateness);
    }
    Ok(LatenessStatus {
        window_sec: 3600,
        total: figures(None, fires, &all),
        minutes,
    })
}

fn figures(minute: Option<DateTime<Utc>>, fires: i64, sample: &[f64]) -> LatenessFigures {
    LatenessFigures {
        minute,
        fires,
        sampled: sample.len(),
        p50_sec: quantile(sample, 0.5),
        p99_sec: quantile(sample, 0.99),
    }
}
