//! The scheduler role: leader-elected, it turns due schedule triggers into runs.
//!
//! Present state: the role process starts like every role (configuration, connections,
//! migrations) and serves `/healthz`, `/readyz` and `/metrics`; its readiness covers Postgres
//! and Redis, which leadership will use. The leader loop itself is not implemented yet, so this
//! process fires nothing today.

use std::{future::Future, net::SocketAddr, sync::Arc};

use nexus_shared::{
    Config, SystemClock,
    ops::{Health, OpsServer},
    runtime::Resources,
};

/// A started scheduler process.
#[derive(Debug)]
pub struct App {
    ops: OpsServer,
}

/// Builds the scheduler from configuration (`NEXUS_SECRET_KEY` is required).
///
/// # Errors
/// Missing secret key, unreachable database during migrations, or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let key = config.require_secret_key()?.clone();
    let resources = Resources::connect(config, &key, Arc::new(SystemClock)).await?;
    let listen = resources.config.listen;
    build_with(&resources, listen).await
}

/// Builds the scheduler on existing resources, serving its operational endpoints on `listen`.
///
/// # Errors
/// The address cannot be bound.
pub async fn build_with(resources: &Resources, listen: SocketAddr) -> anyhow::Result<App> {
    let health = Health::new(resources.store.clone(), Some(resources.redis.clone()));
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
