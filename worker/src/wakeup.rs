//! HTTP wake-ups (and the POST notifications share), signed per Standard Webhooks: `webhook-id` (the heartbeat run's id, stable
//! across retries so receivers can deduplicate), `webhook-timestamp` (Unix seconds) and
//! `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! bytes the agent's `whsec_` secret encodes.

use std::time::Duration;

use nexus_shared::{engine::tasks::MAX_SNOOZE, store::WakeupDelivery};
use serde_json::json;

/// Why a wake-up was not acknowledged.
#[derive(Debug, thiserror::Error)]
pub(crate) enum DeliveryError {
    /// The agent's secret is not a valid `whsec_` secret (it cannot get better by retrying).
    #[error("the agent's wake-up secret is not a valid whsec_ secret")]
    BadSecret,
    /// The request failed or the agent did not answer 2xx.
    #[error("wake-up not acknowledged: {0}")]
    NotAcknowledged(String),
    /// The URL names, or its name resolves to, an address wake-ups may not reach.
    #[error("forbidden_address")]
    Forbidden,
    /// The agent answered 429 or 503 with `Retry-After` in seconds: try again then, without
    /// using up an attempt (at most [`MAX_SNOOZE`] later).
    #[error("the agent asked to be called again in {0:?}")]
    Busy(Duration),
}

/// How long an agent answering `status` with `headers` asks to wait before the next call: a
/// 429 or 503 with `Retry-After` in whole seconds (an HTTP date is not followed: the retry
/// then backs off as for any other refusal).
fn asked_to_wait(
    status: reqwest::StatusCode,
    headers: &reqwest::header::HeaderMap,
) -> Option<Duration> {
    if !matches!(status.as_u16(), 429 | 503) {
        return None;
    }
    let seconds: u64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(seconds).min(MAX_SNOOZE))
}

/// The `webhook-signature` header value for a message.
///
/// # Errors
/// The secret is not `whsec_` followed by base64.
pub(crate) fn signature(
    secret: &str,
    id: &str,
    timestamp: i64,
    body: &[u8],
) -> Result<String, DeliveryError> {
    let key =
        nexus_shared::crypto::standard_webhooks_key(secret).ok_or(DeliveryError::BadSecret)?;
    let mac = nexus_shared::crypto::standard_webhooks_mac(&key, id, &timestamp.to_string(), body);
    Ok(format!("v1,{}", nexus_shared::crypto::encode_base64(&mac)))
}

/// POSTs the wake-up; any 2xx acknowledges it.
pub(crate) async fn deliver(
    http: &reqwest::Client,
    delivery: &WakeupDelivery,
    timestamp: i64,
    allow_private: bool,
) -> Result<(), DeliveryError> {
    let id = delivery.heartbeat_run.id.to_string();
    let body = serde_json::to_vec(
        &json!({ "type": "heartbeat_run.queued", "data": delivery.heartbeat_run }),
    )
    .map_err(|e| DeliveryError::NotAcknowledged(e.to_string()))?;
    let signing = Some((id.as_str(), delivery.secret.as_str(), timestamp));
    let response = post(http, &delivery.url, signing, body, allow_private).await?;
    if response.status().is_success() {
        Ok(())
    } else if let Some(delay) = asked_to_wait(response.status(), response.headers()) {
        Err(DeliveryError::Busy(delay))
    } else {
        Err(DeliveryError::NotAcknowledged(format!(
            "HTTP {}",
            response.status().as_u16()
        )))
    }
}

/// POSTs a JSON body to `url`, signed per Standard Webhooks when `signing` (id, `whsec_`
/// secret, timestamp) is given; the answer, whatever its status. A URL naming a forbidden
/// address, or a name resolving to one, is refused without a request.
///
/// # Errors
/// Forbidden, a bad secret, or the request failed (no answer).
pub(crate) async fn post(
    http: &reqwest::Client,
    url: &str,
    signing: Option<(&str, &str, i64)>,
    body: Vec<u8>,
    allow_private: bool,
) -> Result<reqwest::Response, DeliveryError> {
    // A literal address is not resolved, so the client's resolver never sees it: checked here.
    if !allow_private && nexus_shared::outbound::check_url(url).is_err() {
        return Err(DeliveryError::Forbidden);
    }
    let mut request = http.post(url).header("content-type", "application/json");
    if let Some((id, secret, timestamp)) = signing {
        let signature = signature(secret, id, timestamp, &body)?;
        request = request
            .header("webhook-id", id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature);
    }
    request.body(body).send().await.map_err(|e| {
        if nexus_shared::outbound::is_forbidden_error(&e) {
            DeliveryError::Forbidden
        } else {
            DeliveryError::NotAcknowledged(without_url(&e))
        }
    })
}

/// A request error's description without its URL (which may carry tokens in its query).
fn without_url(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    kind.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_busy_answer_with_seconds_asks_to_wait() {
        use reqwest::{
            StatusCode,
            header::{HeaderMap, HeaderValue, RETRY_AFTER},
        };
        let after = |value: &str| {
            let mut headers = HeaderMap::new();
            headers.insert(RETRY_AFTER, HeaderValue::from_str(value).expect("header"));
            headers
        };
        let busy = StatusCode::TOO_MANY_REQUESTS;
        assert_eq!(
            asked_to_wait(busy, &after("120")),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            asked_to_wait(StatusCode::SERVICE_UNAVAILABLE, &after(" 5 ")),
            Some(Duration::from_secs(5))
        );
        assert_eq!(
            asked_to_wait(busy, &after("999999")),
            Some(MAX_SNOOZE),
            "capped"
        );
        assert_eq!(
            asked_to_wait(busy, &after("Wed, 21 Oct 2026 07:28:00 GMT")),
            None
        );
        assert_eq!(asked_to_wait(busy, &HeaderMap::new()), None);
        assert_eq!(
            asked_to_wait(StatusCode::INTERNAL_SERVER_ERROR, &after("5")),
            None
        );
    }

    #[test]
    fn signs_like_the_standard_webhooks_reference() {
        // The example from the Standard Webhooks specification's test vectors.
        let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
        let body = br#"{"test": 2432232314}"#;
        let signature = signature(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, body)
            .expect("valid secret");
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
        assert!(matches!(
            signature_err("nope"),
            Err(DeliveryError::BadSecret)
        ));
    }

    fn signature_err(secret: &str) -> Result<String, DeliveryError> {
        signature(secret, "id", 0, b"")
    }
}
