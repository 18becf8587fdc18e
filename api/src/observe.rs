//! Per-request tracing span and metrics (`nexus_http_requests_total`,
//! `nexus_http_request_duration_seconds`), labelled by the matched route, never the raw path.

use std::time::Instant;

use axum::{extract::MatchedPath, extract::Request, middleware::Next, response::Response};
use tracing::Instrument as _;

pub(crate) async fn observe(request: Request, next: Next) -> Response {
    let start = Instant::now();
    let method = request.method().as_str().to_owned();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let span = tracing::info_span!("http_request", method = %method, route = %route);
    nexus_shared::telemetry::continue_request_trace(&span, request.headers());
    let response = next.run(request).instrument(span).await;
    let status = response.status().as_u16();
    let elapsed = start.elapsed().as_secs_f64();
    tracing::debug!(method = %method, route = %route, status, elapsed, "request handled");
    metrics::counter!("nexus_http_requests_total",
        "method" => method.clone(), "route" => route.clone(), "status" => status.to_string())
    .increment(1);
    metrics::histogram!("nexus_http_request_duration_seconds", "method" => method, "route" => route)
        .record(elapsed);
    response
}
