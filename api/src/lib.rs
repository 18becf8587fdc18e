//! The HTTP API role: every `/api` route of the contract, plus the operational endpoints.
//!
//! [`build`] binds the listener and assembles the router; [`App::run_until_stopped`] serves
//! until the shutdown future resolves, turning `/readyz` unready first.

pub mod auth;
pub mod console;
pub mod error;
pub mod live;
mod observe;
mod openapi;
mod routes;
pub mod state;
mod trace;

/// The request bodies of the API, as the server reads them: clients (the `nexus` command
/// line) build their requests from these types, so they send exactly what the server takes.
pub mod requests {
    pub use crate::routes::{
        agents::{CreateAgent, WakeupRequest},
        catalog::CreateProject,
        channels::{CreateChannel, UpdateChannel},
        companies::CreateCompany,
        heartbeats::FinishBody,
        issues::{CreateIssue, UpdateIssue},
        pauses::{BulkPause, BulkResume},
        routines::{CreateRoutine, UpdateRoutine},
        runs::{BackfillRequest, ManualSource, RunRequest},
        triggers::{CreateTrigger, RotateSecret, UpdateTrigger},
    };
}

use std::{future::Future, net::SocketAddr, sync::Arc};

use anyhow::Context as _;
use axum::{Router, extract::DefaultBodyLimit, routing::get};
use nexus_shared::{Config, ops::Health, runtime::Resources};
use tokio::net::TcpListener;

use crate::state::AppState;

/// Largest request body the management API accepts.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A bound, ready-to-run API server.
#[derive(Debug)]
pub struct App {
    listener: TcpListener,
    router: Router,
    health: Health,
    limits: nexus_shared::config::HttpLimits,
    /// Live updates, followed while the server runs.
    hub: Arc<live::Hub>,
    store: nexus_shared::Store,
}

/// Builds the API from configuration: connects (running migrations unless disabled) and binds
/// `NEXUS_LISTEN`. The separate `nexus-api` binary requires `NEXUS_SECRET_KEY` and
/// `NEXUS_REDIS_URL`.
///
/// # Errors
/// Missing secret key, unreachable database during migrations, or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let resources = Resources::for_role(config, true).await?;
    let listen = resources.config.listen;
    build_with(resources, listen).await
}

/// Builds the API on existing resources, listening on `listen` (port 0 picks a free port).
///
/// # Errors
/// The address cannot be bound.
pub async fn build_with(resources: Resources, listen: SocketAddr) -> anyhow::Result<App> {
    nexus_shared::telemetry::register_metrics(nexus_shared::telemetry::Role::Api);
    // Install the metrics recorder before anything records.
    nexus_shared::telemetry::metrics();
    let listener = TcpListener::bind(listen)
        .await
        .with_context(|| format!("binding {listen}"))?;
    let health = Health::new(
        resources.store.clone(),
        Some(resources.coordination.clone()),
    );
    let limits = resources.config.http;
    let state = AppState {
        store: resources.store,
        coordination: resources.coordination,
        public_url: resources.config.public_url,
        webhook_rate: resources.config.webhook_rate_per_sec,
        webhook_burst: resources.config.webhook_burst,
        webhook_triggers: Arc::default(),
        allow_private_urls: resources.config.allow_private_urls,
        retention_days: resources.config.retention_days,
        hub: Arc::new(live::Hub::new(limits.event_streams())),
        lateness: Arc::default(),
    };
    let hub = Arc::clone(&state.hub);
    let store = state.store.clone();
    let router = router(state, health.clone());
    Ok(App {
        listener,
        router,
        health,
        limits,
        hub,
        store,
    })
}

fn router(state: AppState, health: Health) -> Router {
    let (api, openapi) = openapi::split(routes::router());
    let openapi = Arc::new(openapi);
    let ops = Router::new()
        .route("/healthz", get(openapi::healthz))
        .route("/readyz", get(openapi::readyz))
        .route("/metrics", get(openapi::metrics))
        .with_state(health);
    api.route(
        "/api/openapi.json",
        get(move || openapi::document(Arc::clone(&openapi))),
    )
    .with_state(state)
    .merge(ops)
    .merge(console::router())
    .route_layer(axum::middleware::from_fn(observe::observe))
    .fallback(error::no_route)
    .method_not_allowed_fallback(error::wrong_method)
    .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

impl App {
    /// The bound port.
    ///
    /// # Panics
    /// If the listener has no local address (it always has once bound).
    #[must_use]
    pub fn port(&self) -> u16 {
        self.listener
            .local_addr()
            .expect("a bound listener has an address")
            .port()
    }

    /// The readiness state, to mark shutdown from outside.
    #[must_use]
    pub fn health(&self) -> Health {
        self.health.clone()
    }

    /// Serves until `shutdown` resolves: `/readyz` turns unready at once, new connections are
    /// refused after a short drain period, and in-flight requests finish.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let following = tokio::spawn(Arc::clone(&self.hub).run(self.store));
        let hub = self.hub;
        // Event streams end when shutdown begins (their clients reconnect elsewhere), so
        // they do not hold the drain until its deadline.
        let shutdown = async move {
            shutdown.await;
            hub.close();
        };
        let served = nexus_shared::ops::serve(
            self.listener,
            self.router,
            self.health,
            self.limits,
            shutdown,
        )
        .await;
        following.abort();
        served?;
        Ok(())
    }
}
