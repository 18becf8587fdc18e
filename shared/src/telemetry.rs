//! Logging, tracing export and metrics set-up shared by every binary.
//!
//! Logs go to standard error (text or JSON). When `OTEL_EXPORTER_OTLP_ENDPOINT` is set, spans
//! are also exported over OTLP/HTTP (`OTEL_EXPORTER_OTLP_PROTOCOL`: `http/protobuf` by default,
//! or `http/json`) with W3C trace-context propagation; when it is not set nothing is exported
//! and nothing about tracing is logged.

use std::{collections::HashMap, io::IsTerminal as _, sync::OnceLock};

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::{
    propagation::{Extractor, Injector, TextMapPropagator as _},
    trace::TracerProvider as _,
};
use opentelemetry_sdk::{propagation::TraceContextPropagator, trace::SdkTracerProvider};
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use tracing_subscriber::{EnvFilter, Layer as _, filter::Targets, fmt, prelude::*};

use crate::config::{Config, LogFormat, OtlpProtocol};

/// Installs the process's TLS provider (ring) for outgoing HTTPS; safe to call repeatedly.
pub fn install_tls_provider() {
    drop(rustls::crypto::ring::default_provider().install_default());
}

/// The installed telemetry; [`Telemetry::shutdown`] flushes spans not yet exported.
#[derive(Debug, Default)]
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Exports what is still buffered and stops the exporter.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider {
            drop(provider.shutdown());
        }
    }
}

/// Installs logging (`NEXUS_LOG`, `NEXUS_LOG_FORMAT`) and, when configured, span export under
/// the service name `OTEL_SERVICE_NAME` (default `role`). Calling it again does nothing.
pub fn init(config: &Config, role: &str) -> Telemetry {
    let filter = EnvFilter::try_new(&config.log).unwrap_or_else(|e| {
        eprintln!("invalid NEXUS_LOG {:?} ({e}); using \"info\"", config.log);
        EnvFilter::new("info")
    });
    // Logs go to standard error: standard output is for what commands print (a board token).
    let logs = match config.log_format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .json()
            .flatten_event(true)
            .with_writer(std::io::stderr)
            .boxed(),
    }
    .with_filter(filter);
    let provider = config.otel_endpoint.as_deref().and_then(|endpoint| {
        let service = config
            .otel_service_name
            .clone()
            .unwrap_or_else(|| role.to_owned());
        match tracer_provider(endpoint, config.otel_protocol, service) {
            Ok(provider) => Some(provider),
            Err(e) => {
                eprintln!("OpenTelemetry export is off: {e}");
                None
            }
        }
    });
    // Exported spans do not depend on the log level: Nexus's own spans at info and above.
    let installed = match &provider {
        Some(provider) => {
            let ours = Targets::new().with_targets(
                [
                    "nexus",
                    "nexus_api",
                    "nexus_scheduler",
                    "nexus_worker",
                    "nexus_shared",
                ]
                .map(|t| (t, tracing::Level::INFO)),
            );
            let spans = tracing_opentelemetry::layer()
                .with_tracer(provider.tracer("nexus-routines"))
                .with_filter(ours);
            tracing_subscriber::registry()
                .with(logs)
                .with(spans)
                .try_init()
        }
        None => tracing_subscriber::registry().with(logs).try_init(),
    };
    drop(installed);
    Telemetry { provider }
}

fn tracer_provider(
    endpoint: &str,
    protocol: OtlpProtocol,
    service: String,
) -> anyhow::Result<SdkTracerProvider> {
    install_tls_provider();
    let protocol = match protocol {
        OtlpProtocol::HttpProtobuf => opentelemetry_otlp::Protocol::HttpBinary,
        OtlpProtocol::HttpJson => opentelemetry_otlp::Protocol::HttpJson,
    };
    let exporter = {
        use opentelemetry_otlp::{WithExportConfig as _, WithHttpConfig as _};
        let url = format!("{}/v1/traces", endpoint.trim_end_matches('/'));
        // The blocking HTTP client is built on its own thread: it runs a runtime of its own.
        std::thread::spawn(move || {
            opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_protocol(protocol)
                .with_endpoint(url)
                .with_http_client(reqwest::blocking::Client::new())
                .build()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("building the OTLP exporter panicked"))??
    };
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service)
        .build();
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build())
}

struct Headers<'a>(&'a axum::http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

struct Carrier(HashMap<String, String>);

impl Injector for Carrier {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_owned(), value);
    }
}

impl Extractor for Carrier {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(String::as_str)
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(String::as_str).collect()
    }
}

/// Makes `span` a child of the trace named by a request's `traceparent` header.
pub fn continue_request_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    let parent = TraceContextPropagator::new().extract(&Headers(headers));
    drop(span.set_parent(parent));
}

/// The current span's W3C trace context (`{"traceparent": …}`), when spans are exported.
#[must_use]
pub fn current_trace_context() -> Option<serde_json::Value> {
    let mut carrier = Carrier(HashMap::new());
    TraceContextPropagator::new().inject_context(&tracing::Span::current().context(), &mut carrier);
    let traceparent = carrier.0.remove("traceparent")?;
    // An invalid (all-zero) context means spans are not being exported.
    (!traceparent.contains("-00000000000000000000000000000000-"))
        .then(|| serde_json::json!({ "traceparent": traceparent }))
}

/// Makes `span` a child of the trace stored with a job.
pub fn continue_job_trace(span: &tracing::Span, trace_context: Option<&serde_json::Value>) {
    let Some(traceparent) = trace_context.and_then(|t| t["traceparent"].as_str()) else {
        return;
    };
    let carrier = Carrier(HashMap::from([(
        "traceparent".to_owned(),
        traceparent.to_owned(),
    )]));
    drop(span.set_parent(TraceContextPropagator::new().extract(&carrier)));
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

/// A role whose metric families [`register_metrics`] declares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API.
    Api,
    /// The scheduler (leader or standby).
    Scheduler,
    /// The worker.
    Worker,
}

/// Installs the recorder and declares every metric family of `role`, each with its help text
/// and, where it has no value yet, a zero — so `/metrics` shows them from the start: a standby
/// scheduler reports `nexus_scheduler_is_leader 0`, and a dashboard can tell a healthy idle
/// role from a dead exporter. Safe to call more than once.
pub fn register_metrics(role: Role) {
    use metrics::{
        Unit, counter, describe_counter, describe_gauge, describe_histogram, gauge, histogram,
    };
    metrics();
    // Any role may fail a run (the API cancelling its issue, a worker dispatching it, the
    // scheduler timing it out): each counts the ones it failed.
    describe_counter!(
        "nexus_runs_failed_total",
        "Runs that became failed in this process, by reason (timed_out included)"
    );
    counter!("nexus_runs_failed_total", "reason" => "timed_out").absolute(0);
    match role {
        Role::Api => {
            describe_counter!(
                "nexus_http_requests_total",
                "HTTP requests answered, by method, route and status"
            );
            describe_histogram!(
                "nexus_http_request_duration_seconds",
                Unit::Seconds,
                "HTTP request duration, by method and route"
            );
            describe_counter!(
                "nexus_webhook_responses_total",
                "Answers of the public webhook endpoint, by status"
            );
            describe_counter!(
                "nexus_heartbeat_runs_total",
                "Heartbeat runs by the status they reached"
            );
            for status in ["202", "401", "409", "429"] {
                counter!("nexus_webhook_responses_total", "status" => status).absolute(0);
            }
        }
        Role::Scheduler => {
            describe_gauge!(
                "nexus_scheduler_is_leader",
                "1 while this scheduler leads, else 0"
            );
            describe_counter!(
                "nexus_scheduler_leadership_changes_total",
                "Leadership terms this process began or ended"
            );
            describe_counter!(
                "nexus_fires_total",
                "Schedule fires, by outcome (dispatched or missed)"
            );
            describe_histogram!(
                "nexus_fire_lateness_seconds",
                Unit::Seconds,
                "How late on-time schedule fires were handled"
            );
            describe_histogram!(
                "nexus_scheduler_pass_seconds",
                Unit::Seconds,
                "Duration of one fire pass"
            );
            describe_counter!(
                "nexus_routines_resumed_total",
                "Paused routines resumed at their pausedUntil"
            );
            counter!("nexus_routines_resumed_total").absolute(0);
            describe_counter!(
                "nexus_retention_deleted_total",
                "History rows deleted by retention, by kind"
            );
            describe_histogram!(
                "nexus_retention_batch_seconds",
                Unit::Seconds,
                "Duration of one retention batch"
            );
            for (kind, _) in crate::engine::retention::PurgeReport::default().by_kind() {
                counter!("nexus_retention_deleted_total", "kind" => kind).absolute(0);
            }
            drop(histogram!("nexus_retention_batch_seconds"));
            gauge!("nexus_scheduler_is_leader").set(0.0);
            counter!("nexus_scheduler_leadership_changes_total").absolute(0);
            for outcome in ["dispatched", "missed"] {
                counter!("nexus_fires_total", "outcome" => outcome).absolute(0);
            }
            drop(histogram!("nexus_fire_lateness_seconds"));
            drop(histogram!("nexus_scheduler_pass_seconds"));
        }
        Role::Worker => {
            describe_counter!("nexus_jobs_total", "Jobs handled, by kind and outcome");
            describe_histogram!(
                "nexus_job_claim_seconds",
                Unit::Seconds,
                "Duration of one claim"
            );
            describe_histogram!(
                "nexus_job_pickup_seconds",
                Unit::Seconds,
                "From a job being due to its claim, by kind"
            );
            describe_histogram!(
                "nexus_job_duration_seconds",
                Unit::Seconds,
                "Duration of one job, by kind"
            );
            describe_counter!(
                "nexus_heartbeat_runs_total",
                "Heartbeat runs by the status they reached"
            );
            describe_counter!(
                "nexus_runs_dispatched_total",
                "Runs dispatched, by the status they reached"
            );
            describe_counter!(
                "nexus_notifications_total",
                "Notification delivery attempts, by event and outcome (delivered, retried, failed)"
            );
            for outcome in ["delivered", "retried", "failed"] {
                counter!("nexus_notifications_total", "event" => "run.failed", "outcome" => outcome)
                    .absolute(0);
            }
            describe_gauge!("nexus_queue_depth", "Jobs in the queue, by kind and state");
            describe_gauge!(
                "nexus_queue_oldest_age_seconds",
                Unit::Seconds,
                "Age of the oldest job, by kind and state"
            );
            counter!("nexus_jobs_total", "kind" => "dispatch_run", "outcome" => "succeeded")
                .absolute(0);
            counter!("nexus_runs_dispatched_total", "status" => "issue_created").absolute(0);
            drop(histogram!("nexus_job_claim_seconds"));
        }
    }
}
