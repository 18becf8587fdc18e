//! The OpenAPI 3.1 document, assembled from the handlers' annotations, served at
//! `GET /api/openapi.json`; and the annotated operational endpoints.

use std::sync::Arc;

use axum::{Json, Router, extract::State, response::Response};
use nexus_shared::ops::{self, Health};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ErrorBody, state::AppState};

#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus Routines API", description = "Routines, triggers, runs and the resources they refer to."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Splits the annotated routes into the axum router and the document, adding the operational
/// endpoints and the document's own path to the document.
pub(crate) fn split(api: OpenApiRouter<AppState>) -> (Router<AppState>, utoipa::openapi::OpenApi) {
    let documented_only: OpenApiRouter<AppState> = OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(healthz_doc))
        .routes(routes!(readyz_doc))
        .routes(routes!(metrics_doc));
    let (_, extra) = documented_only.split_for_parts();
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .split_for_parts();
    doc.merge(extra);
    (router, doc)
}

/// Serves the document.
pub(crate) async fn document(doc: Arc<utoipa::openapi::OpenApi>) -> Json<utoipa::openapi::OpenApi> {
    Json((*doc).clone())
}

pub(crate) async fn healthz() -> Response {
    ops::healthz().await
}

pub(crate) async fn readyz(state: State<Health>) -> Response {
    ops::readyz(state).await
}

pub(crate) async fn metrics() -> Response {
    ops::metrics().await
}

// The handlers below only carry documentation: the real handlers above are routed directly
// because they use another state than the API's.

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is alive")))]
async fn healthz_doc() {}

/// Readiness: the database and Redis answer and the process is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready"), (status = 503, body = ErrorBody)))]
async fn readyz_doc() {}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics_doc() {}
