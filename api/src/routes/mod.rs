//! The routes of the API, one module per area. Each module owns its request and response types
//! and exposes `router()`, an [`OpenApiRouter`] whose handlers carry their OpenAPI description.

mod activity;
mod agents;
mod catalog;
mod companies;
mod heartbeats;
mod issues;
mod routines;
mod runs;
mod triggers;
mod webhooks;

use utoipa_axum::router::OpenApiRouter;

use crate::state::AppState;

/// Every `/api` route.
pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .merge(companies::router())
        .merge(agents::router())
        .merge(catalog::router())
        .merge(issues::router())
        .merge(heartbeats::router())
        .merge(activity::router())
        .merge(routines::router())
        .merge(runs::router())
        .merge(triggers::router())
        .merge(webhooks::router())
}
