//! The worker role: claims queued jobs from the Postgres queue, dispatches runs under the
//! routines' concurrency policies (creating issues and heartbeat runs), delivers HTTP wake-ups
//! to agents and notifications to channels, returns expired leases to the queue and times out stale heartbeat runs.
//!
//! The process also serves `/healthz`, `/readyz` (Postgres) and `/metrics` on `NEXUS_LISTEN`.

mod notify;
mod wakeup;
mod worker;

use std::{future::Future, net::SocketAddr};

use nexus_shared::{
    Config,
    ops::{Health, OpsServer},
    runtime::Resources,
};

pub use crate::worker::{Outcome, Settings, Worker};

/// A started worker process.
#[derive(Debug)]
pub struct App {
    ops: OpsServer,
    worker: Worker,
}

/// The worker settings the configuration asks for.
#[must_use]
pub fn settings(config: &Config) -> Settings {
    Settings {
        concurrency: config.worker_concurrency.get(),
        batch: config.worker_batch.get(),
        heartbeat_timeout: config.heartbeat_timeout,
        lease: config.job_lease,
        allow_private_urls: config.allow_private_urls,
        ..Settings::default()
    }
}

pub use nexus_shared::telemetry::install_tls_provider;

/// A lease owner name unique to this process.
#[must_use]
pub fn owner_name(role: &str) -> String {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
    format!(
        "{role}:{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    )
}

/// Builds the worker from configuration (`NEXUS_SECRET_KEY` is required).
///
/// # Errors
/// Missing secret key, unreachable database during migrations, or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let resources = Resources::for_role(config, false).await?;
    let listen = resources.config.listen;
    build_with(&resources, listen).await
}

/// Builds the worker on existing resources, serving its operational endpoints on `listen`.
///
/// # Errors
/// The address cannot be bound, or the HTTP client cannot be built.
pub async fn build_with(resources: &Resources, listen: SocketAddr) -> anyhow::Result<App> {
    nexus_shared::telemetry::register_metrics(nexus_shared::telemetry::Role::Worker);
    let health = Health::new(resources.store.clone(), None);
    let worker = Worker::new(
        resources.store.clone(),
        owner_name("worker"),
        settings(&resources.config),
    )?;
    Ok(App {
        ops: OpsServer::bind(listen, health, resources.config.http).await?,
        worker,
    })
}

impl App {
    /// The port of the operational endpoints.
    ///
    /// # Errors
    /// The listener has no local address.
    pub fn port(&self) -> anyhow::Result<u16> {
        Ok(self.ops.port()?)
    }

    /// Runs until `shutdown` resolves: stops claiming, lets jobs in flight finish, then stops
    /// serving.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let worker = self.worker;
        self.ops
            .run_role(
                |stop| async move {
                    worker.run(stop).await;
                    tracing::info!("worker stopped");
                },
                async move {
                    shutdown.await;
                    tracing::info!(
                        "worker stopping: no new jobs are claimed; jobs in flight finish"
                    );
                },
            )
            .await?;
        Ok(())
    }
}
