//! Logging and metrics set-up shared by every binary.

use std::{io::IsTerminal as _, sync::OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::config::{Config, LogFormat};

/// Installs the global tracing subscriber described by the configuration (`NEXUS_LOG`,
/// `NEXUS_LOG_FORMAT`). Calling it again does nothing.
pub fn init_logging(config: &Config) {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("invalid NEXUS_LOG {:?} ({e}); using \"info\"", config.log);
        EnvFilter::new("info")
    });
    let registry = tracing_subscriber::registry().with(filter);
    // Logs go to standard error: standard output is for what commands print (a board token).
    let result = match config.log_format {
        LogFormat::Text => registry
            .with(
                fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::stderr().is_terminal()),
            )
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    drop(result);
}

/// The process-wide Prometheus recorder, installed on first use.
///
/// # Panics
/// If another metrics recorder was installed globally before (nothing in Nexus does that).
pub fn metrics() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
                60.0,
            ])
            .expect("bucket list is not empty")
            .install_recorder()
            .expect("no other metrics recorder is installed")
    })
}
