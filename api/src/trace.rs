//! W3C trace context carried from a request into the jobs it causes, so the worker's dispatch
//! continues the request's trace.

use axum::http::HeaderMap;
use serde_json::{Value, json};

/// The trace context to store with a job: the request span's when spans are exported (it
/// continues the request's `traceparent`), else the request's `traceparent` when well-formed,
/// else a new one.
pub(crate) fn context_from(headers: &HeaderMap) -> Value {
    if let Some(current) = nexus_shared::telemetry::current_trace_context() {
        return current;
    }
    let incoming = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .filter(|v| is_traceparent(v))
        .map(str::to_owned);
    let traceparent = incoming.unwrap_or_else(new_traceparent);
    json!({ "traceparent": traceparent })
}

fn is_traceparent(value: &str) -> bool {
    let parts: Vec<&str> = value.split('-').collect();
    let hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    };
    parts.len() == 4
        && hex(parts[0], 2)
        && hex(parts[1], 32)
        && hex(parts[2], 16)
        && hex(parts[3], 2)
        && parts[1].bytes().any(|b| b != b'0')
}

fn new_traceparent() -> String {
    let trace: [u8; 16] = nexus_shared::crypto::random_bytes();
    let span: [u8; 8] = nexus_shared::crypto::random_bytes();
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    format!("00-{}-{}-01", hex(&trace), hex(&span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_valid_traceparent_is_kept_and_an_invalid_one_replaced() {
        let mut headers = HeaderMap::new();
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        headers.insert("traceparent", valid.parse().expect("header"));
        assert_eq!(context_from(&headers)["traceparent"], valid);
        headers.insert("traceparent", "garbage".parse().expect("header"));
        let replaced = context_from(&headers)["traceparent"]
            .as_str()
            .map(str::to_owned)
            .expect("string");
        assert!(is_traceparent(&replaced) && replaced != "garbage");
    }
}
