//! Triggers: add to a routine, update, delete, rotate a webhook trigger's secret.

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::{
    model::{
        DEFAULT_REPLAY_WINDOW, JitterSec, Label, ReplayWindow, SenderSecret, SigningMode, Trigger,
        TriggerKind,
    },
    schedule::{CronExpression, TimeZone},
    store::{
        MAX_ROTATION_GRACE_SEC, NewTrigger, NewTriggerKind, Rotation, SecretMaterial,
        TriggerChanges, TriggerInRoutine,
    },
};
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
        .routes(routes!(create_trigger))
        .routes(routes!(update_trigger, delete_trigger))
        .routes(routes!(rotate_secret))
}

/// Body of `POST /api/routines/{routineId}/triggers`, by kind. Fields of another kind are 400.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum CreateTrigger {
    /// A cron schedule in a time zone.
    #[serde(rename_all = "camelCase")]
    Schedule {
        /// Up to 120 characters.
        #[schema(value_type = Option<nexus_shared::model::Label>, inline)]
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        /// Default `true`.
        #[serde(skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
        /// Five fields, or a macro (`@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`).
        #[schema(value_type = nexus_shared::schedule::CronExpression, inline)]
        cron_expression: String,
        /// IANA name, default `UTC`.
        #[schema(value_type = Option<nexus_shared::schedule::TimeZone>, inline)]
        #[serde(skip_serializing_if = "Option::is_none")]
        timezone: Option<String>,
        /// 0–3600, default 0: each fire happens at its nominal time plus a stable offset in
        /// `[0, jitterSec)` seconds.
        #[schema(minimum = 0, maximum = 3600)]
        #[serde(default, deserialize_with = "crate::error::whole_number")]
        #[serde(skip_serializing_if = "Option::is_none")]
        jitter_sec: Option<i64>,
    },
    /// A signed public URL.
    #[serde(rename_all = "camelCase")]
    Webhook {
        /// Up to 120 characters.
        #[schema(value_type = Option<nexus_shared::model::Label>, inline)]
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
        /// Default `bearer`.
        #[serde(skip_serializing_if = "Option::is_none")]
        signing_mode: Option<SigningMode>,
        /// 30–86400, default 300.
        #[schema(minimum = 30, maximum = 86400)]
        #[serde(default, deserialize_with = "crate::error::whole_number")]
        #[serde(skip_serializing_if = "Option::is_none")]
        replay_window_sec: Option<i64>,
        /// `stripe` and `slack` only: the signing secret the sender issued (16–256 visible
        /// ASCII characters). Without it a secret is generated, which the sender's requests
        /// do not match until its own is set by a rotation. Other modes: 422
        /// `secret_not_settable`.
        #[schema(value_type = Option<nexus_shared::model::SenderSecret>, inline)]
        #[serde(skip_serializing_if = "Option::is_none")]
        webhook_secret: Option<String>,
    },
    /// Manual runs that name it.
    Api {
        /// Up to 120 characters.
        #[schema(value_type = Option<nexus_shared::model::Label>, inline)]
        #[serde(skip_serializing_if = "Option::is_none")]
        label: Option<String>,
        #[serde(skip_serializing_if = "Option::is_none")]
        enabled: Option<bool>,
    },
}

/// Body of `PATCH /api/routine-triggers/{triggerId}`. Fields of another kind are 422.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateTrigger {
    /// May be given, but only with the trigger's own kind: a kind cannot change.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<TriggerKind>,
    /// Up to 120 characters.
    #[schema(value_type = Option<nexus_shared::model::Label>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
    /// Schedule triggers only.
    #[schema(value_type = Option<nexus_shared::schedule::CronExpression>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cron_expression: Option<String>,
    /// Schedule triggers only: an IANA name.
    #[schema(value_type = Option<nexus_shared::schedule::TimeZone>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// Schedule triggers only: 0–3600.
    #[schema(minimum = 0, maximum = 3600)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jitter_sec: Option<i64>,
    /// Webhook triggers only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub signing_mode: Option<SigningMode>,
    /// Webhook triggers only: 30–86400.
    #[schema(minimum = 30, maximum = 86400)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replay_window_sec: Option<i64>,
}

/// A webhook trigger's URL and secret, shown only on creation and rotation.
// No `Debug`: it holds a secret in plaintext.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct SecretMaterialBody {
    webhook_url: String,
    webhook_secret: String,
}

/// A trigger, with its secret material when it was just created or rotated.
// No `Debug`: it holds a secret in plaintext.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TriggerWithSecret {
    trigger: Trigger,
    /// `null` except for a webhook trigger's creation and rotation.
    secret_material: Option<SecretMaterialBody>,
}

impl From<SecretMaterial> for SecretMaterialBody {
    fn from(material: SecretMaterial) -> Self {
        Self {
            webhook_url: material.webhook_url,
            webhook_secret: material.webhook_secret,
        }
    }
}

fn label(value: Option<String>) -> Result<Option<Label>, ApiError> {
    value.map(|l| field("label", Label::parse(l))).transpose()
}

pub(crate) fn cron(value: &str) -> Result<CronExpression, ApiError> {
    field("cronExpression", CronExpression::parse(value))
}

pub(crate) fn zone(value: &str) -> Result<TimeZone, ApiError> {
    field("timezone", TimeZone::parse(value))
}

fn jitter(value: i64) -> Result<JitterSec, ApiError> {
    field("jitterSec", JitterSec::parse(value))
}

fn replay_window(value: i64) -> Result<ReplayWindow, ApiError> {
    field("replayWindowSec", ReplayWindow::parse(value))
}

fn sender_secret(value: Option<String>) -> Result<Option<SenderSecret>, ApiError> {
    value
        .map(|s| field("webhookSecret", SenderSecret::parse(s)))
        .transpose()
}

/// Loads a trigger the caller may manage: 404 outside its company, 403 for an agent and a
/// routine that is not its own.
async fn managed(auth: Auth, state: &AppState, id: Uuid) -> Result<TriggerInRoutine, ApiError> {
    let found = state.store.trigger(id).await.found("trigger")?;
    auth.see(found.company_id, "trigger")?;
    auth.manage_routine(found.assignee_agent_id)?;
    Ok(found)
}

/// Add a trigger to a routine (board, or its assignee agent).
#[utoipa::path(post, path = "/api/routines/{routineId}/triggers", tag = "triggers",
    params(("routineId" = Uuid, Path)), request_body = CreateTrigger,
    responses((status = 201, body = TriggerWithSecret), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn create_trigger(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(routine_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateTrigger>,
) -> Result<(StatusCode, Json<TriggerWithSecret>), ApiError> {
    let routine = state.store.routine(routine_id).await.found("routine")?;
    auth.see(routine.company_id, "routine")?;
    auth.manage_routine(routine.assignee_agent_id)?;
    let new = match body {
        CreateTrigger::Schedule {
            label: l,
            enabled,
            cron_expression,
            timezone,
            jitter_sec,
        } => NewTrigger {
            kind: NewTriggerKind::Schedule {
                cron: cron(&cron_expression)?,
                zone: timezone.as_deref().map_or(Ok(TimeZone::UTC), zone)?,
                jitter: jitter(jitter_sec.unwrap_or(0))?,
            },
            label: label(l)?.unwrap_or_default(),
            enabled: enabled.unwrap_or(true),
        },
        CreateTrigger::Webhook {
            label: l,
            enabled,
            signing_mode,
            replay_window_sec,
            webhook_secret,
        } => NewTrigger {
            kind: NewTriggerKind::Webhook {
                signing_mode: signing_mode.unwrap_or(SigningMode::Bearer),
                replay_window: replay_window_sec
                    .map(replay_window)
                    .transpose()?
                    .unwrap_or(DEFAULT_REPLAY_WINDOW),
                sender_secret: sender_secret(webhook_secret)?,
            },
            label: label(l)?.unwrap_or_default(),
            enabled: enabled.unwrap_or(true),
        },
        CreateTrigger::Api { label: l, enabled } => NewTrigger {
            kind: NewTriggerKind::Api,
            label: label(l)?.unwrap_or_default(),
            enabled: enabled.unwrap_or(true),
        },
    };
    let (trigger, material) = state
        .store
        .create_trigger(routine_id, new, auth.0)
        .await
        .found("routine")?;
    let body = TriggerWithSecret {
        trigger,
        secret_material: material.map(SecretMaterialBody::from),
    };
    Ok((StatusCode::CREATED, Json(body)))
}

/// Update a trigger (board, or the routine's assignee agent).
#[utoipa::path(patch, path = "/api/routine-triggers/{triggerId}", tag = "triggers",
    params(("triggerId" = Uuid, Path)), request_body = UpdateTrigger,
    responses((status = 200, body = Trigger), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody),
              (status = 422, body = ErrorBody)))]
async fn update_trigger(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(trigger_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateTrigger>,
) -> Result<Json<Trigger>, ApiError> {
    let found = managed(auth, &state, trigger_id).await?;
    let kind = found.trigger.kind();
    if body.kind.is_some_and(|k| k != kind) {
        return Err(ApiError::invalid_field(
            "kind",
            "cannot change; delete the trigger and add another",
        ));
    }
    let foreign = |name: &str, present: bool, own: TriggerKind| -> Result<(), ApiError> {
        if present && kind != own {
            return Err(ApiError::invalid_field(
                name,
                &format!("does not apply to a {kind} trigger"),
            ));
        }
        Ok(())
    };
    foreign(
        "cronExpression",
        body.cron_expression.is_some(),
        TriggerKind::Schedule,
    )?;
    foreign("timezone", body.timezone.is_some(), TriggerKind::Schedule)?;
    foreign(
        "jitterSec",
        body.jitter_sec.is_some(),
        TriggerKind::Schedule,
    )?;
    foreign(
        "signingMode",
        body.signing_mode.is_some(),
        TriggerKind::Webhook,
    )?;
    foreign(
        "replayWindowSec",
        body.replay_window_sec.is_some(),
        TriggerKind::Webhook,
    )?;
    let changes = TriggerChanges {
        label: label(body.label)?,
        enabled: body.enabled,
        cron: body.cron_expression.as_deref().map(cron).transpose()?,
        zone: body.timezone.as_deref().map(zone).transpose()?,
        jitter: body.jitter_sec.map(jitter).transpose()?,
        signing_mode: body.signing_mode,
        replay_window: body.replay_window_sec.map(replay_window).transpose()?,
    };
    Ok(Json(
        state
            .store
            .update_trigger(trigger_id, changes, auth.0)
            .await
            .found("trigger")?,
    ))
}

/// Delete a trigger and its secret (board, or the routine's assignee agent).
#[utoipa::path(delete, path = "/api/routine-triggers/{triggerId}", tag = "triggers",
    params(("triggerId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 409, body = ErrorBody)))]
async fn delete_trigger(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(trigger_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    managed(auth, &state, trigger_id).await?;
    state
        .store
        .delete_trigger(trigger_id, auth.0)
        .await
        .found("trigger")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/routine-triggers/{triggerId}/rotate-secret` (may be empty).
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RotateSecret {
    /// 0–604800, default 0: how long the replaced secret keeps working.
    #[schema(minimum = 0, maximum = 604_800)]
    #[serde(default, deserialize_with = "crate::error::whole_number")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub previous_secret_valid_sec: Option<i64>,
    /// Default `false`: end a previous secret still in its grace period instead of 409.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub force: Option<bool>,
    /// `stripe` and `slack` only: the new secret, as the sender issued it (16–256 visible
    /// ASCII characters); without it one is generated. Other modes: 422 `secret_not_settable`.
    #[schema(value_type = Option<nexus_shared::model::SenderSecret>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub webhook_secret: Option<String>,
}

/// Replace a webhook trigger's secret; the old one keeps working for
/// `previousSecretValidSec` (default 0: it stops at once). A `stripe` or `slack` trigger takes
/// the secret its sender issued as `webhookSecret`.
#[utoipa::path(post, path = "/api/routine-triggers/{triggerId}/rotate-secret", tag = "triggers",
    params(("triggerId" = Uuid, Path)), request_body = RotateSecret,
    responses((status = 200, body = TriggerWithSecret), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn rotate_secret(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(trigger_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<RotateSecret>,
) -> Result<Json<TriggerWithSecret>, ApiError> {
    let found = managed(auth, &state, trigger_id).await?;
    if found.trigger.kind() != TriggerKind::Webhook {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "not_a_webhook_trigger",
            "only webhook triggers have a secret to rotate",
        ));
    }
    let grace = body.previous_secret_valid_sec.unwrap_or(0);
    if !(0..=MAX_ROTATION_GRACE_SEC).contains(&grace) {
        return Err(ApiError::invalid_field(
            "previousSecretValidSec",
            &format!("must be from 0 to {MAX_ROTATION_GRACE_SEC}"),
        ));
    }
    let rotation = Rotation {
        grace: chrono::TimeDelta::seconds(grace),
        force: body.force.unwrap_or(false),
        sender_secret: sender_secret(body.webhook_secret)?,
    };
    let (trigger, material) = state
        .store
        .rotate_trigger_secret(trigger_id, rotation, auth.0)
        .await
        .found("trigger")?;
    Ok(Json(TriggerWithSecret {
        trigger,
        secret_material: Some(material.into()),
    }))
}

impl RequestBody for CreateTrigger {}

impl RequestBody for RotateSecret {}

impl RequestBody for UpdateTrigger {}
