//! The worker role: claims queued jobs, applies concurrency policies, creates issues and
//! heartbeat runs, delivers wake-ups.
//!
//! Present state: the role process starts like every role (configuration, connections,
//! migrations) and serves `/healthz`, `/readyz` and `/metrics`; its readiness covers Postgres.
//! The job loop itself is not implemented yet, so this process dispatches nothing today.

use std::{future::Future, net::SocketAddr, sync::Arc};

use nexus_shared::{
    Config, SystemClock,
    ops::{Health, OpsServer},
    runtime::Resources,
};

/// A started worker process.
#[derive(Debug)]
pub struct App {
    ops: OpsServer,
}

/// Builds the worker from configuration (`NEXUS_SECRET_KEY` is required).
///
/// # Errors
/// Missing secret key, unreachable database during migrations, or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let key = config.require_secret_key()?.clone();
    let resources = Resources::connect(config, &key, Arc::new(SystemClock)).await?;
    let listen = resources.config.listen;
    build_with(&resources, listen).await
}

/// Builds the worker on existing resources, serving its operational endpoints on `listen`.
///
/// # Errors
/// The address cannot be bound.
pub async fn build_with(resources: &Resources, listen: SocketAddr) -> anyhow::Result<App> {
    let health = Health::new(resources.store.clone(), None);
    Ok(App {
        ops: OpsServer::bind(listen, health).await?,
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

    /// Runs until `shutdown` resolves.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        self.ops.run_until_stopped(shutdown).await?;
        Ok(())
    }
}
