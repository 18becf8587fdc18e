//! The public webhook endpoint: `POST /api/routine-triggers/public/{publicId}/fire`.
//!
//! It faces the internet, so every byte is hostile. Checks run in the contract's order, the
//! first failing one answering: body size (413, enforced while reading), unknown trigger (404),
//! rate limit (429), credentials (401, one body whatever the cause), replayed signature (409),
//! body format (415, 400), trigger and routine state (409), then idempotency. Secrets and
//! signatures are compared in constant time and never logged. Accepted signatures are
//! remembered by the store, with the run they admit (see `store::CallSignature`).

use std::sync::Arc;

use axum::{
    body::Body,
    extract::State,
    http::{HeaderMap, HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use hmac::{KeyInit as _, Mac as _};
use nexus_shared::{
    kv::Admission,
    model::{
        Delivery, IdempotencyKey, RunSource, STANDARD_WEBHOOKS_KEY_PREFIX, SigningMode,
        stored_payload,
    },
    store::{CallSignature, NewRun, Refusal, StoreError, WebhookTrigger},
};
use serde_json::Value;
use subtle::ConstantTimeEq as _;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::{ApiError, ApiPath, ErrorBody, field},
    routes::runs::accepted_response,
    state::AppState,
    trace,
};

/// The largest accepted webhook body.
pub(crate) const MAX_WEBHOOK_BODY: usize = 256 * 1024;

/// A `publicId` longer than this cannot exist.
const MAX_PUBLIC_ID: usize = 64;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(fire))
}

/// Fire a webhook trigger. Authenticated by the trigger's secret, not by an API token:
/// `Authorization: Bearer <secret>` (`bearer` mode), or `X-Paperclip-Timestamp` and
/// `X-Paperclip-Signature` (`hmac_sha256` mode: hex HMAC-SHA256 of `{timestamp}.{body}` keyed
/// with the secret), `webhook-id`/`webhook-timestamp`/`webhook-signature` (`standard_webhooks`)
/// or `X-Hub-Signature-256` with `X-GitHub-Delivery` (`github`). The body is empty or a JSON
/// object, at most 256 KiB; an `Idempotency-Key` header (or the format's own delivery id)
/// returns the original run on a retry.
#[utoipa::path(post, path = "/api/routine-triggers/public/{publicId}/fire", tag = "webhooks",
    params(("publicId" = String, Path)), security(()),
    request_body(content = Object, content_type = "application/json", description = "Empty, or a JSON object: the run's payload"),
    responses((status = 202, body = nexus_shared::model::Run),
              (status = 200, body = Object, description = "`github` mode: `X-GitHub-Event: ping` answered `{\"pong\": true}`, no run"),
              (status = 400, body = ErrorBody),
              (status = 401, body = ErrorBody), (status = 404, body = ErrorBody),
              (status = 409, body = ErrorBody), (status = 413, body = ErrorBody),
              (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
              (status = 429, body = ErrorBody)))]
async fn fire(
    State(state): State<AppState>,
    ApiPath(public_id): ApiPath<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let response = match handle(&state, &public_id, &headers, body).await {
        Ok(response) => response,
        Err(error) => error.into_response(),
    };
    metrics::counter!("nexus_webhook_responses_total", "status" => response.status().as_u16().to_string())
        .increment(1);
    response
}

async fn handle(
    state: &AppState,
    public_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // What can be refused without the body is refused first: a body announced too large, an
    // unknown trigger (no read for an id found unknown a moment ago).
    check_declared_size(headers)?;
    let found = if could_exist(public_id) {
        state.webhook_triggers.get(&state.store, public_id).await?
    } else {
        None
    };
    let found = found.ok_or_else(|| ApiError::not_found("webhook"))?;
    let mut trigger = found.trigger;
    // Credentials are checked before the rate limit is consulted, but answered after it (the
    // contract's order: a limited caller gets 429 whatever its credentials). A refusal decided
    // on a cached read is checked against the trigger as stored (the secret may have been
    // rotated), at most once a second per trigger. What the headers decide — a bearer secret,
    // a signed call's unusable timestamp or signature header — is decided, limited and
    // answered before the body is read; only a signed call with usable headers is read.
    let now_ms = state.store.clock().now().timestamp_millis();
    let mut checked = check_headers(&trigger, headers, now_ms);
    if matches!(checked, Headers::Refused)
        && found.cached
        && state.webhook_triggers.may_reread(&state.store, trigger.id)
    {
        trigger = read_trigger(state, public_id).await?;
        checked = check_headers(&trigger, headers, now_ms);
    }
    let mut body = Some(body);
    let (bytes, authenticated) = match checked {
        Headers::Refused => (None, None),
        Headers::Bearer => (None, Some(None)),
        Headers::Signed { .. } | Headers::Standard { .. } | Headers::BodySigned { .. } => {
            let bytes = read_body(body.take()).await?;
            let mut authenticated = verify(&trigger, &checked, &bytes, now_ms);
            if authenticated.is_none()
                && found.cached
                && state.webhook_triggers.may_reread(&state.store, trigger.id)
            {
                trigger = read_trigger(state, public_id).await?;
                authenticated = authenticate(&trigger, headers, &bytes, now_ms);
            }
            (Some(bytes), authenticated)
        }
    };
    // Calls with bad credentials draw on a bucket of their own: a flood of them is limited
    // (429 before 401, the contract's order) without using up the sender's tokens.
    let bucket = if authenticated.is_some() {
        format!("ratelimit:{}", trigger.id)
    } else {
        format!("ratelimit-refused:{}", trigger.id)
    };
    let admission = state
        .coordination
        .admit(&bucket, state.webhook_rate, state.webhook_burst)
        .await
        .map_err(ApiError::unavailable)?;
    if let Admission::Limited { retry_after_ms } = admission {
        return Err(rate_limited(retry_after_ms));
    }
    let Some(signature) = authenticated else {
        return Err(bad_credentials());
    };
    // A bearer call's body is read only now, once it is admitted.
    let bytes = match bytes {
        Some(bytes) => bytes,
        None => read_body(body.take()).await?,
    };
    // GitHub's configuration check is answered, with no run, once it is authenticated.
    if trigger.signing_mode == SigningMode::Github {
        github_delivery(headers)?;
        if headers.get("x-github-event").is_some_and(|e| e == "ping") {
            return Ok((
                StatusCode::OK,
                axum::Json(serde_json::json!({ "pong": true })),
            )
                .into_response());
        }
    }
    // The memory of accepted signatures is in the database, written with the run: a replay
    // is refused there, before the trigger's state is looked at. Only a call whose body no
    // longer parses (its content type was changed) asks for it here, to keep the order.
    let new = match new_run(&trigger, headers, &bytes, signature.clone()) {
        Ok(new) => new,
        Err(error) => {
            if let Some(signature) = signature
                && state
                    .store
                    .signature_seen(trigger.id, signature.mac)
                    .await?
            {
                return Err(StoreError::from(Refusal::Replayed).into());
            }
            return Err(error);
        }
    };
    let mut accepted = state.store.accept_webhook_run(&trigger, new).await;
    if matches!(&accepted, Err(StoreError::Refused(Refusal::TriggerChanged))) {
        // The trigger changed after it was read (here or in the cache): the call is checked
        // again against the trigger as it is now, and accepted only if it still passes.
        trigger = read_trigger(state, public_id).await?;
        let Some(signature) = authenticate(&trigger, headers, &bytes, now_ms) else {
            return Err(bad_credentials());
        };
        let new = new_run(&trigger, headers, &bytes, signature)?;
        accepted = state.store.accept_webhook_run(&trigger, new).await;
    }
    let accepted = accepted?;
    Ok(accepted_response(accepted.run, accepted.replayed))
}

/// Whether `public_id` has the form of a public id (URL-safe base64, bounded): anything else
/// (U+0000, say) is unknown without asking the database.
fn could_exist(public_id: &str) -> bool {
    !public_id.is_empty()
        && public_id.len() <= MAX_PUBLIC_ID
        && public_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The trigger as the database has it now; 404 when it was deleted.
async fn read_trigger(state: &AppState, public_id: &str) -> Result<Arc<WebhookTrigger>, ApiError> {
    state
        .webhook_triggers
        .read(&state.store, public_id)
        .await?
        .ok_or_else(|| ApiError::not_found("webhook"))
}

/// The run a call asks for: its payload and idempotency key (400/415 when malformed), and the
/// signature that authenticated it.
fn new_run(
    trigger: &WebhookTrigger,
    headers: &HeaderMap,
    bytes: &[u8],
    signature: Option<CallSignature>,
) -> Result<NewRun, ApiError> {
    let payload = parse_payload(headers, bytes)?;
    let delivery_id = (trigger.signing_mode == SigningMode::StandardWebhooks)
        .then(|| headers.get("webhook-id").and_then(|v| v.to_str().ok()))
        .flatten();
    let github = (trigger.signing_mode == SigningMode::Github)
        .then(|| github_delivery(headers))
        .transpose()?;
    let idempotency_key = match headers.get("idempotency-key") {
        // Where the format carries the sender's delivery id, that id decides what a repeat is.
        _ if github.is_some() => github
            .map(|(id, event)| {
                field(
                    "X-GitHub-Delivery",
                    IdempotencyKey::parse(Delivery::github_key(id, event)),
                )
            })
            .transpose()?,
        _ if delivery_id.is_some() => Some(field(
            "webhook-id",
            IdempotencyKey::parse(format!(
                "{STANDARD_WEBHOOKS_KEY_PREFIX}{}",
                delivery_id.unwrap_or_default()
            )),
        )?),
        None => None,
        Some(value) => {
            let value = value.to_str().map_err(|_| {
                ApiError::invalid_field("Idempotency-Key", "must be printable text")
            })?;
            Some(field(
                "Idempotency-Key",
                IdempotencyKey::parse(value.to_owned()),
            )?)
        }
    };
    Ok(NewRun {
        source: RunSource::Webhook,
        trigger_id: Some(trigger.id),
        payload,
        idempotency_key,
        trace_context: Some(trace::context_from(headers)),
        signature,
    })
}

/// A GitHub call's `X-GitHub-Delivery` (required: 400 without it) and `X-GitHub-Event`
/// (may be absent): the delivery id 1–100 letters, digits and `-`, the event 0–64 of
/// lowercase letters, digits, `_` and `.`.
fn github_delivery(headers: &HeaderMap) -> Result<(&str, &str), ApiError> {
    let id = headers
        .get("x-github-delivery")
        .and_then(|v| v.to_str().ok())
        .filter(|id| {
            (1..=100).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .ok_or_else(|| {
            ApiError::bad_request(
                "missing_delivery_id",
                "X-GitHub-Delivery is required: 1 to 100 letters, digits and dashes",
            )
        })?;
    let event = headers
        .get("x-github-event")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if event.len() > 64
        || !event
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'.')
    {
        return Err(ApiError::bad_request(
            "invalid_event",
            "X-GitHub-Event must be up to 64 lowercase letters, digits, `_` and `.`",
        ));
    }
    Ok((id, event))
}

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        "the body is over 256 KiB",
    )
}

/// 413 for a body whose `Content-Length` is over [`MAX_WEBHOOK_BODY`], before any of it is read.
fn check_declared_size(headers: &HeaderMap) -> Result<(), ApiError> {
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
async fn read_body(body: Option<Body>) -> Result<axum::body::Bytes, ApiError> {
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

/// What a call's headers say of its credentials, before its body is read.
enum Headers<'h> {
    /// Refused already: no usable credentials, or a bearer secret that does not match.
    Refused,
    /// A bearer call with the trigger's secret.
    Bearer,
    /// A signed call whose headers are usable: the signature is checked against the body.
    Signed {
        timestamp: &'h str,
        sent_ms: i64,
        signature: Vec<u8>,
    },
    /// A call signed over its body alone (GitHub's `X-Hub-Signature-256`).
    BodySigned { signature: Vec<u8> },
    /// A Standard Webhooks call whose headers are usable: any of its `v1` signatures must
    /// match the body; its `webhook-id` identifies the delivery.
    Standard {
        id: &'h str,
        timestamp: &'h str,
        signatures: Vec<Vec<u8>>,
    },
}

/// The longest `webhook-id` accepted (it becomes the run's idempotency key).
const MAX_DELIVERY_ID: usize = 200;

/// The most `v1` entries of one `webhook-signature` header that are checked.
const MAX_SIGNATURES: usize = 8;

/// Unix seconds as sent (digits only), in milliseconds, if within `window_sec` of `now_ms`.
fn timestamp_within(timestamp: &str, now_ms: i64, window_sec: i32) -> Option<i64> {
    if timestamp.is_empty()
        || timestamp.len() > 20
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let value: i64 = timestamp.parse().ok()?;
    let sent_ms = if value > 1_000_000_000_000 {
        value
    } else {
        value.checked_mul(1000)?
    };
    let window_ms = i64::from(window_sec) * 1000;
    (now_ms.checked_sub(sent_ms)?.abs() <= window_ms).then_some(sent_ms)
}

/// The Standard Webhooks headers: `webhook-id` (printable, at most [`MAX_DELIVERY_ID`]),
/// `webhook-timestamp` (Unix seconds within the window) and `webhook-signature` (space-separated
/// `v1,<base64>` entries; other versions are ignored, at least one `v1` is needed).
fn standard_headers<'h>(
    headers: &'h HeaderMap,
    now_ms: i64,
    window_sec: i32,
) -> Option<Headers<'h>> {
    let id = headers.get("webhook-id")?.to_str().ok()?;
    if id.is_empty() || id.len() > MAX_DELIVERY_ID || !id.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let timestamp = headers.get("webhook-timestamp")?.to_str().ok()?;
    // Seconds only: a value in milliseconds is not this format's.
    if timestamp.len() > 12 {
        return None;
    }
    timestamp_within(timestamp, now_ms, window_sec)?;
    let signatures: Vec<Vec<u8>> = headers
        .get("webhook-signature")?
        .to_str()
        .ok()?
        .split(' ')
        .filter_map(|entry| entry.strip_prefix("v1,"))
        .take(MAX_SIGNATURES)
        .filter_map(nexus_shared::crypto::decode_base64)
        .filter(|mac| mac.len() == 32)
        .collect();
    (!signatures.is_empty()).then_some(Headers::Standard {
        id,
        timestamp,
        signatures,
    })
}

/// Checks what the headers alone can decide: a bearer secret (the current one, or the one a
/// rotation replaced while its grace period lasts), or whether a signed call's timestamp is
/// within the window and its signature header well formed.
fn check_headers<'h>(trigger: &WebhookTrigger, headers: &'h HeaderMap, now_ms: i64) -> Headers<'h> {
    let checked = || -> Option<Headers<'h>> {
        match trigger.signing_mode {
            SigningMode::Bearer => {
                let presented =
                    crate::auth::bearer_credentials(headers.get(header::AUTHORIZATION)?)?;
                // Every secret is compared, so the time taken does not say which matched.
                let matched = trigger
                    .secrets_at(instant(now_ms))
                    .fold(subtle::Choice::from(0), |any, secret| {
                        any | presented.ct_eq(secret.as_bytes())
                    });
                bool::from(matched).then_some(Headers::Bearer)
            }
            SigningMode::StandardWebhooks => {
                standard_headers(headers, now_ms, trigger.replay_window_sec)
            }
            SigningMode::Github => {
                let value = headers.get("x-hub-signature-256")?.to_str().ok()?;
                let hex_mac = value.strip_prefix("sha256=")?;
                if hex_mac.len() != 64 {
                    return None;
                }
                Some(Headers::BodySigned {
                    signature: hex::decode(hex_mac).ok()?,
                })
            }
            SigningMode::HmacSha256 => {
                let timestamp = headers.get("x-paperclip-timestamp")?.to_str().ok()?;
                let sent_ms = timestamp_within(timestamp, now_ms, trigger.replay_window_sec)?;
                let signature = headers.get("x-paperclip-signature")?.to_str().ok()?;
                let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
                if signature.len() != 64 {
                    return None;
                }
                let signature = hex::decode(signature).ok()?;
                Some(Headers::Signed {
                    timestamp,
                    sent_ms,
                    signature,
                })
            }
        }
    };
    checked().unwrap_or(Headers::Refused)
}

/// The clock reading `now_ms` as an instant.
fn instant(now_ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default()
}

/// The call's credentials given its body: `Some(None)` for a valid bearer call,
/// `Some(Some(signature))` for a valid signed call (its MAC, remembered against replays until
/// its own timestamp has left the window), `None` otherwise. A signature is checked against
/// every secret that works at `now_ms` (the current one, and a replaced one in its grace).
fn verify(
    trigger: &WebhookTrigger,
    checked: &Headers<'_>,
    body: &[u8],
    now_ms: i64,
) -> Option<Option<CallSignature>> {
    match checked {
        Headers::Refused => None,
        Headers::Bearer => Some(None),
        Headers::BodySigned { signature } => {
            // No timestamp: the delivery id recognises a repeat, nothing is remembered.
            signed_by_any(trigger, now_ms, &[body], signature).then_some(None)
        }
        Headers::Standard {
            id,
            timestamp,
            signatures,
        } => {
            // Every secret against every signature, compared in constant time; the delivery id
            // (not a signature memory) recognises a repeat, so nothing is remembered.
            let mut matched = subtle::Choice::from(0);
            for secret in trigger.secrets_at(instant(now_ms)) {
                let key = nexus_shared::crypto::standard_webhooks_key(secret)
                    .unwrap_or_else(|| secret.as_bytes().to_vec());
                let mac = nexus_shared::crypto::standard_webhooks_mac(&key, id, timestamp, body);
                for signature in signatures {
                    matched |= mac.as_slice().ct_eq(signature);
                }
            }
            bool::from(matched).then_some(None)
        }
        Headers::Signed {
            timestamp,
            sent_ms,
            signature,
        } => {
            if !signed_by_any(
                trigger,
                now_ms,
                &[timestamp.as_bytes(), b".", body],
                signature,
            ) {
                return None;
            }
            // One second more than the window, rounded up: past it, the timestamp no longer
            // authenticates.
            let window_ms = i64::from(trigger.replay_window_sec) * 1000;
            let remember_until = sent_ms.checked_add(window_ms)?.div_euclid(1000) + 2;
            Some(Some(CallSignature {
                mac: signature.clone(),
                remember_until,
            }))
        }
    }
}

/// Whether `signature` is the HMAC-SHA256 of `parts` (concatenated) keyed with one of the
/// secrets that work at `now_ms` (the secret string's bytes). Every secret is tried, so the
/// time taken does not say which matched; each comparison is constant-time.
fn signed_by_any(trigger: &WebhookTrigger, now_ms: i64, parts: &[&[u8]], signature: &[u8]) -> bool {
    trigger
        .secrets_at(instant(now_ms))
        .fold(false, |any, secret| {
            let Ok(mut mac) = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()) else {
                return any;
            };
            for part in parts {
                mac.update(part);
            }
            mac.verify_slice(signature).is_ok() | any
        })
}

/// [`check_headers`] then [`verify`].
fn authenticate(
    trigger: &WebhookTrigger,
    headers: &HeaderMap,
    body: &[u8],
    now_ms: i64,
) -> Option<Option<CallSignature>> {
    verify(
        trigger,
        &check_headers(trigger, headers, now_ms),
        body,
        now_ms,
    )
}

/// The payload: `{}` for an empty body, else a JSON object; JSON only when the content type
/// is `application/json` (any parameters) or absent.
fn parse_payload(
    headers: &HeaderMap,
    body: &[u8],
) -> Result<serde_json::Map<String, Value>, ApiError> {
    if let Some(content_type) = headers.get(header::CONTENT_TYPE) {
        let essence = content_type
            .to_str()
            .unwrap_or_default()
            .split(';')
            .next()
            .unwrap_or_default()
            .trim();
        if !essence.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the body must be JSON (content type application/json) or empty",
            ));
        }
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(serde_json::Map::new());
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

fn bad_credentials() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "invalid or missing webhook credentials",
    )
}

fn rate_limited(retry_after_ms: u64) -> ApiError {
    let seconds = retry_after_ms.div_ceil(1000).max(1);
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "rate_limited",
        "too many calls for this webhook; retry later",
    )
    .with_details(serde_json::json!({ "retryAfterSec": seconds }))
    .with_header(header::RETRY_AFTER, HeaderValue::from(seconds))
}
