//! The scheduler role: leader-elected through a Redis lease (see [`leader`]), it turns due
//! schedule triggers into runs exactly once, applying the catch-up policy to fires missed
//! during an outage, and sleeps until the next fire instead of polling.
//!
//! The process also serves `/healthz`, `/readyz` (Postgres and Redis) and `/metrics` on
//! `NEXUS_LISTEN`.

pub mod leader;
mod retention;
mod scheduler;

use std::{future::Future, net::SocketAddr};

use nexus_shared::{
    Config,
    ops::{Health, OpsServer},
    runtime::Resources,
};

pub use crate::{
    leader::LeaderLock,
    retention::RetentionStep,
    scheduler::{LeadStep, Scheduler, Settings},
};

/// A started scheduler process.
#[derive(Debug)]
pub struct App {
    ops: OpsServer,
    scheduler: Scheduler,
}

/// The scheduler of `resources`, with an instance id unique to this process.
#[must_use]
pub fn scheduler(resources: &Resources) -> Scheduler {
    let host = std::env::var("HOSTNAME").unwrap_or_else(|_| "local".to_owned());
    let id = format!(
        "scheduler:{host}:{}:{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let lock = LeaderLock::new(
        resources.coordination.clone(),
        id,
        resources.config.leader_ttl,
    );
    let settings = Settings {
        misfire_grace: resources.config.misfire_grace,
        lookahead: resources.config.schedule_lookahead,
        retention_days: resources.config.retention_days,
        ..Settings::default()
    };
    Scheduler::new(resources.store.clone(), lock, settings)
}

/// Builds the scheduler from configuration (`NEXUS_SECRET_KEY` and `NEXUS_REDIS_URL` are
/// required).
///
/// # Errors
/// Missing secret key, unreachable database during migrations, or the address is taken.
pub async fn build(config: Config) -> anyhow::Result<App> {
    let resources = Resources::for_role(config, true).await?;
    let listen = resources.config.listen;
    build_with(&resources, listen).await
}

/// Builds the scheduler on existing resources, serving its operational endpoints on `listen`.
///
/// # Errors
/// The address cannot be bound.
pub async fn build_with(resources: &Resources, listen: SocketAddr) -> anyhow::Result<App> {
    nexus_shared::telemetry::register_metrics(nexus_shared::telemetry::Role::Scheduler);
    let health = Health::new(
        resources.store.clone(),
        Some(resources.coordination.clone()),
    );
    Ok(App {
        ops: OpsServer::bind(listen, health, resources.config.http).await?,
        scheduler: scheduler(resources),
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

    /// Runs until `shutdown` resolves, then stops firing and releases leadership.
    ///
    /// # Errors
    /// The listener failed.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let scheduler = self.scheduler;
        self.ops
            .run_role(
                |stop| async move {
                    scheduler.run(stop).await;
                    tracing::info!("scheduler stopped");
                },
                async move {
                    shutdown.await;
                    tracing::info!("scheduler stopping: releasing leadership");
                },
            )
            .await?;
        Ok(())
    }
}
