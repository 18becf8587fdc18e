//! `nexus-worker`: the worker role alone.

use nexus_shared::{Config, runtime::shutdown_signal, telemetry};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::from_env().map_err(|e| anyhow::anyhow!(e))?;
    let telemetry = telemetry::init(&config, "nexus-worker");
    let app = nexus_worker::build(config).await?;
    let result = app.run_until_stopped(shutdown_signal()).await;
    telemetry.shutdown();
    result
}
