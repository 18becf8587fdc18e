//! Notification channels (board only): where an operator is told that something went wrong.

use axum::{Json, extract::State, http::StatusCode};
use nexus_shared::{
    model::{
        ChannelKind, ChannelName, NotificationChannel, NotificationDelivery, NotificationEvent,
        WakeupUrl,
    },
    store::{ChannelChanges, MAX_NAMED_ROUTINES, NewChannel},
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
        .routes(routes!(create_channel, list_channels))
        .routes(routes!(update_channel, delete_channel))
        .routes(routes!(test_channel))
        .routes(routes!(deliveries))
}

/// Body of `POST /api/companies/{companyId}/notification-channels`.
#[derive(Debug, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateChannel {
    /// 1–100 characters.
    #[schema(value_type = nexus_shared::model::ChannelName, inline)]
    pub name: String,
    /// `webhook` (Standard Webhooks-signed POSTs of the event) or `slack` (a Slack
    /// incoming-webhook URL, posted `{"text": …}`).
    pub kind: ChannelKind,
    /// An absolute http(s) URL, at most 2,048 characters, not naming a private address.
    #[schema(max_length = 2048, format = "uri")]
    pub url: String,
    /// The events it receives (at least one): `run.failed`, `run.missed`,
    /// `routine.paused_on_failures`, `routine.recovered`, `wakeup.failed`, `test`.
    #[schema(value_type = Vec<NotificationEvent>, min_items = 1)]
    pub events: Vec<String>,
    /// Only these routines of the company (at most 500); absent for all of them.
    #[schema(max_items = 500)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine_ids: Option<Vec<Uuid>>,
    /// Default `true`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// Body of `PATCH /api/notification-channels/{channelId}`: any create field but `kind`;
/// `routineIds: null` makes it receive events of every routine.
#[derive(Debug, Default, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateChannel {
    /// 1–100 characters.
    #[schema(value_type = Option<nexus_shared::model::ChannelName>, inline)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// As on creation.
    #[schema(max_length = 2048, format = "uri")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    /// At least one.
    #[schema(value_type = Option<Vec<NotificationEvent>>, min_items = 1)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    /// At most 500; `null` for every routine.
    #[schema(value_type = Option<Vec<Uuid>>, max_items = 500)]
    #[serde(default, deserialize_with = "super::routines::nullable")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub routine_ids: Option<Option<Vec<Uuid>>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// A channel just created, with its signing secret.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct CreatedChannelBody {
    channel: NotificationChannel,
    /// For a `webhook` channel, its Standard Webhooks secret (`whsec_…`), shown only here;
    /// `null` for `slack`.
    signing_secret: Option<String>,
}

/// A company's channels.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct ChannelList {
    channels: Vec<NotificationChannel>,
}

/// A channel's notifications, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct DeliveryList {
    deliveries: Vec<NotificationDelivery>,
}

/// The `test` notification sent.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub(crate) struct TestSent {
    /// Its id: the `webhook-id` a `webhook` channel receives, and a row of the deliveries.
    notification_id: Uuid,
}

/// Query of the deliveries.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub(crate) struct DeliveriesQuery {
    /// At most this many (default 50; above 200 is treated as 200).
    #[param(minimum = 1)]
    limit: Option<i64>,
}

/// The events of a request: at least one, each known (422 otherwise), each once.
fn events(names: Vec<String>) -> Result<Vec<NotificationEvent>, ApiError> {
    if names.is_empty() {
        return Err(ApiError::invalid_field(
            "events",
            "must name at least one event",
        ));
    }
    let mut events = Vec::new();
    for name in names {
        let event = name.parse::<NotificationEvent>().map_err(|_| {
            let known: Vec<&str> = NotificationEvent::ALL.iter().map(|e| e.as_str()).collect();
            ApiError::invalid_field(
                "events",
                &format!("unknown event; the events are {}", known.join(", ")),
            )
        })?;
        if !events.contains(&event) {
            events.push(event);
        }
    }
    Ok(events)
}

/// A channel URL: http(s), bounded, and not naming a private address unless the deployment
/// allows it (a name resolving to one fails the delivery with `forbidden_address`).
fn url(state: &AppState, url: &str) -> Result<String, ApiError> {
    let url = field("url", WakeupUrl::parse(url))?;
    if !state.allow_private_urls {
        field("url", nexus_shared::outbound::check_url(url.as_str()))?;
    }
    Ok(url.as_str().to_owned())
}

fn routine_ids(ids: Vec<Uuid>) -> Result<Vec<Uuid>, ApiError> {
    if ids.len() > MAX_NAMED_ROUTINES {
        return Err(ApiError::invalid_field(
            "routineIds",
            "names at most 500 routines",
        ));
    }
    let mut distinct = Vec::with_capacity(ids.len());
    for id in ids {
        if !distinct.contains(&id) {
            distinct.push(id);
        }
    }
    Ok(distinct)
}

/// The channel, if the caller (a board token) may manage it.
async fn channel(
    auth: Auth,
    state: &AppState,
    id: Uuid,
    what: &str,
) -> Result<NotificationChannel, ApiError> {
    auth.require_board(what)?;
    let channel = state
        .store
        .channel(id)
        .await
        .found("notification channel")?;
    auth.see(channel.company_id, "notification channel")?;
    Ok(channel)
}

/// Create a notification channel (board only).
#[utoipa::path(post, path = "/api/companies/{companyId}/notification-channels", tag = "notifications",
    params(("companyId" = Uuid, Path)), request_body = CreateChannel,
    responses((status = 201, body = CreatedChannelBody), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn create_channel(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<CreateChannel>,
) -> Result<(StatusCode, Json<CreatedChannelBody>), ApiError> {
    auth.require_board("manage notification channels")?;
    auth.see_company(&state, company_id).await?;
    let new = NewChannel {
        name: field("name", ChannelName::parse(body.name))?,
        kind: body.kind,
        url: url(&state, &body.url)?,
        events: events(body.events)?,
        routine_ids: body.routine_ids.map(routine_ids).transpose()?,
        enabled: body.enabled.unwrap_or(true),
    };
    let created = state
        .store
        .create_channel(company_id, new, auth.0)
        .await
        .found("company")?;
    Ok((
        StatusCode::CREATED,
        Json(CreatedChannelBody {
            channel: created.channel,
            signing_secret: created.signing_secret,
        }),
    ))
}

/// A company's notification channels, oldest first (never their secrets).
#[utoipa::path(get, path = "/api/companies/{companyId}/notification-channels", tag = "notifications",
    params(("companyId" = Uuid, Path)),
    responses((status = 200, body = ChannelList), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn list_channels(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(company_id): ApiPath<Uuid>,
) -> Result<Json<ChannelList>, ApiError> {
    auth.require_board("see notification channels")?;
    auth.see_company(&state, company_id).await?;
    let channels = state.store.channels(company_id).await?;
    Ok(Json(ChannelList { channels }))
}

/// Change a notification channel (board only).
#[utoipa::path(patch, path = "/api/notification-channels/{channelId}", tag = "notifications",
    params(("channelId" = Uuid, Path)), request_body = UpdateChannel,
    responses((status = 200, body = NotificationChannel), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn update_channel(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(channel_id): ApiPath<Uuid>,
    ApiJson(body): ApiJson<UpdateChannel>,
) -> Result<Json<NotificationChannel>, ApiError> {
    channel(auth, &state, channel_id, "manage notification channels").await?;
    let changes = ChannelChanges {
        name: body
            .name
            .map(|n| field("name", ChannelName::parse(n)))
            .transpose()?,
        url: body.url.map(|u| url(&state, &u)).transpose()?,
        events: body.events.map(events).transpose()?,
        routine_ids: body
            .routine_ids
            .map(|ids| ids.map(routine_ids).transpose())
            .transpose()?,
        enabled: body.enabled,
    };
    Ok(Json(
        state
            .store
            .update_channel(channel_id, changes, auth.0)
            .await
            .found("notification channel")?,
    ))
}

/// Delete a notification channel (board only); its undelivered notifications are dropped.
#[utoipa::path(delete, path = "/api/notification-channels/{channelId}", tag = "notifications",
    params(("channelId" = Uuid, Path)),
    responses((status = 204), (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody)))]
async fn delete_channel(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(channel_id): ApiPath<Uuid>,
) -> Result<StatusCode, ApiError> {
    channel(auth, &state, channel_id, "manage notification channels").await?;
    state
        .store
        .delete_channel(channel_id, auth.0)
        .await
        .found("notification channel")?;
    Ok(StatusCode::NO_CONTENT)
}

/// Send one `test` event to a channel (board only), whatever events it subscribes to.
#[utoipa::path(post, path = "/api/notification-channels/{channelId}/test", tag = "notifications",
    params(("channelId" = Uuid, Path)),
    responses((status = 202, body = TestSent), (status = 401, body = ErrorBody),
              (status = 403, body = ErrorBody), (status = 404, body = ErrorBody)))]
async fn test_channel(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(channel_id): ApiPath<Uuid>,
) -> Result<(StatusCode, Json<TestSent>), ApiError> {
    channel(auth, &state, channel_id, "test notification channels").await?;
    let notification_id = state
        .store
        .test_channel(channel_id, auth.0)
        .await
        .found("notification channel")?;
    Ok((StatusCode::ACCEPTED, Json(TestSent { notification_id })))
}

/// A channel's notifications and how their delivery went, newest first (board only).
#[utoipa::path(get, path = "/api/notification-channels/{channelId}/deliveries", tag = "notifications",
    params(("channelId" = Uuid, Path), DeliveriesQuery),
    responses((status = 200, body = DeliveryList), (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 403, body = ErrorBody),
              (status = 404, body = ErrorBody), (status = 422, body = ErrorBody)))]
async fn deliveries(
    auth: Auth,
    State(state): State<AppState>,
    ApiPath(channel_id): ApiPath<Uuid>,
    ApiQuery(query): ApiQuery<DeliveriesQuery>,
) -> Result<Json<DeliveryList>, ApiError> {
    channel(auth, &state, channel_id, "see notification deliveries").await?;
    let limit = limit(query.limit, 50, 200)?;
    let deliveries = state.store.channel_deliveries(channel_id, limit).await?;
    Ok(Json(DeliveryList { deliveries }))
}

impl RequestBody for CreateChannel {
    const NULLABLE: &'static [&'static str] = &[];
}

impl RequestBody for UpdateChannel {
    const NULLABLE: &'static [&'static str] = &["routineIds"];
}
