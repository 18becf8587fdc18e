//! The routes of the API, one module per area. Each module owns its request and response types
//! and exposes `router()`, an [`OpenApiRouter`] whose handlers carry their OpenAPI description.

mod activity;
pub(crate) mod agents;
pub(crate) mod catalog;
pub(crate) mod channels;
pub(crate) mod companies;
mod events;
pub(crate) mod heartbeats;
pub(crate) mod issues;
pub(crate) mod pauses;
pub(crate) mod routines;
pub(crate) mod runs;
pub(crate) mod system;
pub(crate) mod triggers;
mod webhooks;

use utoipa::ToSchema;
use utoipa_axum::router::OpenApiRouter;

use crate::{error::RequestBody, state::AppState};

/// Every `/api` route.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(companies::router())
        .merge(agents::router())
        .merge(catalog::router())
        .merge(issues::router())
        .merge(heartbeats::router())
        .merge(activity::router())
        .merge(events::router())
        .merge(routines::router())
        .merge(pauses::router())
        .merge(runs::router())
        .merge(triggers::router())
        .merge(channels::router())
        .merge(system::router())
        .merge(webhooks::router())
}

/// Every request body schema by name, with the fields that accept an explicit `null` (the
/// document shows `null` for those alone).
pub(crate) fn request_bodies() -> Vec<(std::borrow::Cow<'static, str>, &'static [&'static str])> {
    fn body<T: ToSchema + RequestBody>() -> (std::borrow::Cow<'static, str>, &'static [&'static str])
    {
        (T::name(), T::NULLABLE)
    }
    vec![
        body::<companies::CreateCompany>(),
        body::<agents::CreateAgent>(),
        body::<agents::UpdateAgent>(),
        body::<catalog::CreateProject>(),
        body::<catalog::CreateGoal>(),
        body::<issues::CreateIssue>(),
        body::<issues::UpdateIssue>(),
        body::<heartbeats::FinishBody>(),
        body::<routines::CreateRoutine>(),
        body::<routines::UpdateRoutine>(),
        body::<pauses::PauseSelection>(),
        body::<pauses::ResumeSelection>(),
        body::<channels::CreateChannel>(),
        body::<channels::UpdateChannel>(),
        body::<runs::RunRequest>(),
        body::<runs::BackfillRequest>(),
        body::<triggers::CreateTrigger>(),
        body::<triggers::UpdateTrigger>(),
        body::<triggers::RotateSecret>(),
        (agents::WakeupRequest::name(), &[]),
    ]
}
