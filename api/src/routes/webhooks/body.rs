//! A webhook call's body: bounded while it is read, then turned into the run's payload.

use axum::{
    body::Body,
    http::{HeaderMap, StatusCode, header},
};
use nexus_shared::model::stored_payload;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// The largest accepted webhook body.
pub(crate) const MAX_WEBHOOK_BODY: usize = 256 * 1024;

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is over 256 KiB",
    )
}

/// 413 for a body whose `Content-Length` is over [`MAX_WEBHOOK_BODY`], before any of it is read.
pub(super) fn check_declared_size(headers: &HeaderMap) -> Result<(), ApiError> {
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_WEBHOOK_BODY as u64) {
        return Err(too_large());
    }
    Ok(())
}

/// Reads at most [`MAX_WEBHOOK_BODY`] bytes; a larger body is refused without reading it all.
pub(super) async fn read_body(body: Option<Body>) -> Result<axum::body::Bytes, ApiError> {
    let Some(body) = body else {
        return Ok(axum::body::Bytes::new());
    };
    let limited = http_body_util::Limited::new(body, MAX_WEBHOOK_BODY);
    match http_body_util::BodyExt::collect(limited).await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ApiError::bad_request(
            "invalid_body",
            "the body could not be read",
        )),
    }
}

/// How a body is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Json,
    Form,
}

/// The payload: `{}` for an empty body, else a JSON object; JSON when the content type is
/// `application/json` (any parameters) or absent. Where `forms` allows it (Slack's slash
/// commands and interactions), an `application/x-www-form-urlencoded` body too: each field
/// becomes a string member, a field sent several times an array of its values in order.
pub(super) fn parse_payload(
    headers: &HeaderMap,
    body: &[u8],
    forms: bool,
) -> Result<Map<String, Value>, ApiError> {
    let encoding = match headers.get(header::CONTENT_TYPE) {
        None => Encoding::Json,
        Some(content_type) => {
            let essence = content_type
                .to_str()
                .unwrap_or_default()
                .split(';')
                .next()
                .unwrap_or_default()
                .trim();
            if essence.eq_ignore_ascii_case("application/json") {
                Encoding::Json
            } else if forms && essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
                Encoding::Form
            } else {
                return Err(unsupported(forms));
            }
        }
    };
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    if encoding == Encoding::Form {
        return Ok(stored_payload(form_fields(body)));
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(map)) => Ok(stored_payload(map)),
        Ok(_) => Err(ApiError::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        )),
        Err(e) => Err(ApiError::bad_request(
            "malformed_json",
            format!("the body is not valid JSON: {e}"),
        )),
    }
}

fn unsupported(forms: bool) -> ApiError {
    let message = if forms {
        "the body must be JSON (application/json), a form (application/x-www-form-urlencoded), or empty"
    } else {
        "the body must be JSON (content type application/json) or empty"
    };
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        message,
    )
}

/// A form's fields as an object (bytes that are not UTF-8 become U+FFFD).
fn form_fields(body: &[u8]) -> Map<String, Value> {
    let mut fields = Map::new();
    for (name, value) in form_urlencoded::parse(body) {
        let value = Value::String(value.into_owned());
        match fields.get_mut(name.as_ref()) {
            None => {
                fields.insert(name.into_owned(), value);
            }
            Some(Value::Array(values)) => values.push(value),
            Some(first) => *first = Value::Array(vec![first.take(), value]),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(content_type: &str, body: &str) -> Result<Value, u16> {
        let mut headers = HeaderMap::new();
        headers.insert(header::CONTENT_TYPE, content_type.parse().expect("value"));
        parse_payload(&headers, body.as_bytes(), true)
            .map(Value::Object)
            .map_err(|e| e.status().as_u16())
    }

    #[test]
    fn a_form_body_becomes_an_object_of_its_fields() {
        assert_eq!(
            form(
                "application/x-www-form-urlencoded",
                "command=%2Fdeploy&text=web+now&x=%00&tag=a&tag=b&tag=c"
            ),
            Ok(serde_json::json!({
                "command": "/deploy",
                "text": "web now",
                "x": "\u{fffd}",
                "tag": ["a", "b", "c"],
            }))
        );
        assert_eq!(
            form("application/x-www-form-urlencoded; charset=utf-8", ""),
            Ok(serde_json::json!({}))
        );
        assert_eq!(form("text/plain", "a=b"), Err(415));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::CONTENT_TYPE,
            "application/x-www-form-urlencoded".parse().expect("value"),
        );
        // Only where the mode takes forms.
        assert_eq!(
            parse_payload(&headers, b"a=b", false).map_err(|e| e.status().as_u16()),
            Err(415)
        );
    }
}
