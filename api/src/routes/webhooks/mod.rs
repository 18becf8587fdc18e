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
use nexus_shared::{
    kv::Admission,
    model::{Delivery, IdempotencyKey, RunSource, SigningMode},
    store::{CallSignature, NewRun, Refusal, StoreError, WebhookTrigger},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use self::{
    body::{check_declared_size, parse_payload, read_body},
    formats::{Credentials, authenticate, check_headers, verify},
};
use crate::{
    error::{ApiError, ApiPath, ErrorBody, field},
    routes::runs::accepted_response,
    state::AppState,
    trace,
};

mod body;
mod formats;

/// A `publicId` longer than this cannot exist.
const MAX_PUBLIC_ID: usize = 64;

pub(super) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(fire))
}

/// Fire a webhook trigger. Authenticated by the trigger's secret, not by an API token:
/// `Authorization: Bearer <secret>` (`bearer` mode), or `X-Paperclip-Timestamp` and
/// `X-Paperclip-Signature` (`hmac_sha256` mode: hex HMAC-SHA256 of `{timestamp}.{body}` keyed
/// with the secret), `webhook-id`/`webhook-timestamp`/`webhook-signature` (`standard_webhooks`),
/// `X-Hub-Signature-256` with `X-GitHub-Delivery` (`github`), `Stripe-Signature` (`stripe`),
/// or `X-Slack-Request-Timestamp` and `X-Slack-Signature` (`slack`, which also takes form
/// bodies). The body is empty or a JSON object, at most 256 KiB; an `Idempotency-Key` header
/// (or the format's own delivery id) returns the original run on a retry.
#[utoipa::path(post, path = "/api/routine-triggers/public/{publicId}/fire", tag = "webhooks",
    params(("publicId" = String, Path)), security(()),
    request_body(description = "Empty, or a JSON object: the run's payload; in `slack` mode also a form, each field a member of the payload",
        content((Object = "application/json"), (Object = "application/x-www-form-urlencoded"))),
    responses((status = 202, body = nexus_shared::model::Run),
              (status = 200, body = Object, description = "No run: `github` mode's `X-GitHub-Event: ping` answered `{\"pong\": true}`; `slack` mode's `url_verification` answered `{\"challenge\": …}`"),
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
    if matches!(checked, Credentials::Refused)
        && found.cached
        && state.webhook_triggers.may_reread(&state.store, trigger.id)
    {
        trigger = read_trigger(state, public_id).await?;
        checked = check_headers(&trigger, headers, now_ms);
    }
    let mut body = Some(body);
    let (bytes, authenticated) = match checked {
        Credentials::Refused => (None, None),
        Credentials::Bearer => (None, Some(None)),
        Credentials::Signed(_) => {
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
    // A sender's configuration check (GitHub's ping, Slack's URL verification) is answered,
    // with no run, once it is authenticated.
    if let Some(answer) = formats::handshake(trigger.signing_mode, headers, &new.payload)? {
        return Ok((StatusCode::OK, axum::Json(answer)).into_response());
    }
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
/// signature that authenticated it. Where the format carries the sender's delivery id, that id
/// decides what a repeat is (an `Idempotency-Key` header is then not used).
fn new_run(
    trigger: &WebhookTrigger,
    headers: &HeaderMap,
    bytes: &[u8],
    signature: Option<CallSignature>,
) -> Result<NewRun, ApiError> {
    let mode = trigger.signing_mode;
    let payload = parse_payload(headers, bytes, mode == SigningMode::Slack)?;
    let delivered = formats::delivery(mode, headers, &payload)?
        .and_then(|(id, event)| Delivery::key(mode, id, event));
    let idempotency_key = match (delivered, headers.get("idempotency-key")) {
        (Some(key), _) => Some(field("delivery id", IdempotencyKey::parse(key))?),
        (None, None) => None,
        (None, Some(value)) => {
            let value = value.to_str().map_err(|_| {
                ApiError::invalid_field("Idempotency-Key", "must be printable text")
            })?;
            if Delivery::is_reserved(value) {
                return Err(ApiError::invalid_field(
                    "Idempotency-Key",
                    "must not start with webhook-id:, github:, stripe: or slack: (the keys of senders' delivery ids)",
                ));
            }
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
