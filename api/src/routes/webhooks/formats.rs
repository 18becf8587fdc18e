//! How a call authenticates in each signing mode: what its headers alone decide (a bearer
//! secret; a signed call's timestamp and signature headers), then its signatures over the
//! body, checked against every secret that works now; and the sender's own identity of a
//! delivery, where the format has one.
//!
//! Every signed format is the same computation with its own framing: HMAC-SHA256 of some
//! header values, the body, and separators, keyed with the secret, any one presented
//! signature matching.
//!
//! | mode | signed message | signatures | replay |
//! |---|---|---|---|
//! | `hmac_sha256` | `{ts}.{body}` | one, hex | signature memory |
//! | `standard_webhooks` | `{id}.{ts}.{body}` (key: the decoded `whsec_`) | `v1,<base64>` entries | `webhook-id` |
//! | `github` | `{body}` | `sha256=<hex>` | `X-GitHub-Delivery` |
//! | `stripe` | `{t}.{body}` | `v1=<hex>` entries | the event's `id` |
//! | `slack` | `v0:{ts}:{body}` | `v0=<hex>` | signature memory (and an Events API `event_id`) |

use axum::http::{HeaderMap, header};
use nexus_shared::{
    crypto::{decode_base64, hmac_sha256, standard_webhooks_key},
    model::SigningMode,
    store::{CallSignature, WebhookTrigger},
};
use serde_json::{Map, Value};
use subtle::ConstantTimeEq as _;

use crate::error::ApiError;

/// What a call's headers say of its credentials, before its body is read.
pub(super) enum Credentials<'h> {
    /// Refused already: no usable credentials, or a bearer secret that does not match.
    Refused,
    /// A bearer call with one of the trigger's secrets.
    Bearer,
    /// A signed call whose headers are usable: its signatures are checked against the body.
    Signed(Signed<'h>),
}

/// A signed call's usable headers.
pub(super) struct Signed<'h> {
    /// What the format signs before the body, in order.
    prefix: Vec<&'h [u8]>,
    /// The signatures presented (any one matching will do), at most [`MAX_SIGNATURES`].
    signatures: Vec<Vec<u8>>,
    /// Standard Webhooks keys are the bytes a `whsec_` secret encodes; every other format's
    /// key is the secret string itself.
    decoded_key: bool,
    /// When the call says it was sent, for the formats without a delivery id: an accepted
    /// signature is remembered against replays until this has left the window.
    remembered_from_ms: Option<i64>,
}

/// The longest `webhook-id`, Stripe event id or Slack `event_id` accepted (it becomes part of
/// the run's idempotency key).
const MAX_DELIVERY_ID: usize = 200;

/// The most signatures of one header that are checked.
const MAX_SIGNATURES: usize = 8;

/// Unix seconds as sent (digits only; milliseconds too where `millis` allows them), in
/// milliseconds, if within `window_sec` of `now_ms`.
fn timestamp_within(timestamp: &str, now_ms: i64, window_sec: i32, millis: bool) -> Option<i64> {
    let longest = if millis { 20 } else { 12 };
    if timestamp.is_empty()
        || timestamp.len() > longest
        || !timestamp.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    let value: i64 = timestamp.parse().ok()?;
    let sent_ms = if millis && value > 1_000_000_000_000 {
        value
    } else {
        value.checked_mul(1000)?
    };
    let window_ms = i64::from(window_sec) * 1000;
    (now_ms.checked_sub(sent_ms)?.abs() <= window_ms).then_some(sent_ms)
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok()
}

/// 32 bytes from 64 hex digits.
fn hex_mac(value: &str) -> Option<Vec<u8>> {
    (value.len() == 64)
        .then(|| hex::decode(value).ok())
        .flatten()
}

/// Whether `id` can be a delivery id: 1 to [`MAX_DELIVERY_ID`] visible ASCII characters.
fn usable_id(id: &str) -> bool {
    (1..=MAX_DELIVERY_ID).contains(&id.len()) && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Checks what the headers alone can decide: a bearer secret (the current one, or the one a
/// rotation replaced while its grace period lasts), or whether a signed call's timestamp is
/// within the window and its signature headers well formed.
pub(super) fn check_headers<'h>(
    trigger: &WebhookTrigger,
    headers: &'h HeaderMap,
    now_ms: i64,
) -> Credentials<'h> {
    if trigger.signing_mode == SigningMode::Bearer {
        return bearer(trigger, headers, now_ms);
    }
    match signed_headers(
        trigger.signing_mode,
        headers,
        now_ms,
        trigger.replay_window_sec,
    ) {
        Some(signed) if !signed.signatures.is_empty() => Credentials::Signed(signed),
        _ => Credentials::Refused,
    }
}

/// A signed call's usable headers in `mode`: its timestamp within `window` seconds of
/// `now_ms` and its signature header well formed (`None` for a bearer call, which has none).
fn signed_headers<'h>(
    mode: SigningMode,
    headers: &'h HeaderMap,
    now_ms: i64,
    window: i32,
) -> Option<Signed<'h>> {
    match mode {
        SigningMode::Bearer => None,
        SigningMode::HmacSha256 => {
            let timestamp = header(headers, "x-paperclip-timestamp")?;
            let sent_ms = timestamp_within(timestamp, now_ms, window, true)?;
            let signature = header(headers, "x-paperclip-signature")?;
            let signature = signature.strip_prefix("sha256=").unwrap_or(signature);
            Some(Signed {
                prefix: vec![timestamp.as_bytes(), b"."],
                signatures: vec![hex_mac(signature)?],
                decoded_key: false,
                remembered_from_ms: Some(sent_ms),
            })
        }
        SigningMode::StandardWebhooks => {
            let id = header(headers, "webhook-id").filter(|id| usable_id(id))?;
            let timestamp = header(headers, "webhook-timestamp")?;
            timestamp_within(timestamp, now_ms, window, false)?;
            let signatures = header(headers, "webhook-signature")?
                .split(' ')
                .filter_map(|entry| entry.strip_prefix("v1,"))
                .take(MAX_SIGNATURES)
                .filter_map(decode_base64)
                .filter(|mac| mac.len() == 32)
                .collect();
            Some(Signed {
                prefix: vec![id.as_bytes(), b".", timestamp.as_bytes(), b"."],
                signatures,
                decoded_key: true,
                remembered_from_ms: None,
            })
        }
        SigningMode::Github => {
            let signature = header(headers, "x-hub-signature-256")?.strip_prefix("sha256=")?;
            Some(Signed {
                prefix: Vec::new(),
                signatures: vec![hex_mac(signature)?],
                decoded_key: false,
                remembered_from_ms: None,
            })
        }
        SigningMode::Stripe => {
            // `t=<seconds>,v1=<hex>[,v1=<hex>…]`, other schemes ignored; one `t` only.
            let mut timestamp = None;
            let mut signatures = Vec::new();
            for item in header(headers, "stripe-signature")?.split(',') {
                match item.split_once('=')? {
                    ("t", _) if timestamp.is_some() => return None,
                    ("t", t) => timestamp = Some(t),
                    ("v1", mac) if signatures.len() < MAX_SIGNATURES => {
                        signatures.extend(hex_mac(mac));
                    }
                    _ => {}
                }
            }
            let timestamp = timestamp?;
            timestamp_within(timestamp, now_ms, window, false)?;
            Some(Signed {
                prefix: vec![timestamp.as_bytes(), b"."],
                signatures,
                decoded_key: false,
                remembered_from_ms: None,
            })
        }
        SigningMode::Slack => {
            let timestamp = header(headers, "x-slack-request-timestamp")?;
            let sent_ms = timestamp_within(timestamp, now_ms, window, false)?;
            let signature = header(headers, "x-slack-signature")?.strip_prefix("v0=")?;
            Some(Signed {
                prefix: vec![b"v0:", timestamp.as_bytes(), b":"],
                signatures: vec![hex_mac(signature)?],
                decoded_key: false,
                remembered_from_ms: Some(sent_ms),
            })
        }
    }
}

/// A bearer call: every secret that works now is compared, so the time taken does not say
/// which matched.
fn bearer<'h>(trigger: &WebhookTrigger, headers: &'h HeaderMap, now_ms: i64) -> Credentials<'h> {
    let Some(presented) = headers
        .get(header::AUTHORIZATION)
        .and_then(crate::auth::bearer_credentials)
    else {
        return Credentials::Refused;
    };
    let matched = trigger
        .secrets_at(instant(now_ms))
        .fold(subtle::Choice::from(0), |any, secret| {
            any | presented.ct_eq(secret.as_bytes())
        });
    if bool::from(matched) {
        Credentials::Bearer
    } else {
        Credentials::Refused
    }
}

/// The clock reading `now_ms` as an instant.
fn instant(now_ms: i64) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp_millis(now_ms).unwrap_or_default()
}

/// The call's credentials given its body: `Some(None)` for a valid call that nothing is
/// remembered of (bearer, or a format with a delivery id), `Some(Some(signature))` for a valid
/// signed call whose signature is remembered against replays until its own timestamp has left
/// the window, `None` otherwise. Every signature is checked against every secret that works at
/// `now_ms` (the current one, and a replaced one in its grace), each comparison constant-time,
/// so the time taken does not say which matched.
pub(super) fn verify(
    trigger: &WebhookTrigger,
    credentials: &Credentials<'_>,
    body: &[u8],
    now_ms: i64,
) -> Option<Option<CallSignature>> {
    let signed = match credentials {
        Credentials::Refused => return None,
        Credentials::Bearer => return Some(None),
        Credentials::Signed(signed) => signed,
    };
    let mut message = signed.prefix.clone();
    message.push(body);
    let mut matched = subtle::Choice::from(0);
    for secret in trigger.secrets_at(instant(now_ms)) {
        let decoded = signed
            .decoded_key
            .then(|| standard_webhooks_key(secret))
            .flatten();
        let key = decoded.as_deref().unwrap_or(secret.as_bytes());
        let mac = hmac_sha256(key, &message);
        for signature in &signed.signatures {
            matched |= mac.as_slice().ct_eq(signature);
        }
    }
    if !bool::from(matched) {
        return None;
    }
    let Some(sent_ms) = signed.remembered_from_ms else {
        return Some(None);
    };
    // One second more than the window, rounded up: past it, the timestamp no longer
    // authenticates.
    let window_ms = i64::from(trigger.replay_window_sec) * 1000;
    let remember_until = sent_ms.checked_add(window_ms)?.div_euclid(1000) + 2;
    Some(Some(CallSignature {
        mac: signed.signatures.first()?.clone(),
        remember_until,
    }))
}

/// [`check_headers`] then [`verify`].
pub(super) fn authenticate(
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

/// The sender's identity of an authenticated delivery, `(id, event)`, where the format has
/// one: Standard Webhooks' `webhook-id`; GitHub's `X-GitHub-Delivery` and `X-GitHub-Event`
/// (the id required: 400); the Stripe event's `id` in the body (required: 400); a Slack
/// Events API callback's `event_id` (a slash command or an interaction has none).
pub(super) fn delivery<'a>(
    mode: SigningMode,
    headers: &'a HeaderMap,
    payload: &'a Map<String, Value>,
) -> Result<Option<(&'a str, &'a str)>, ApiError> {
    Ok(match mode {
        SigningMode::Bearer | SigningMode::HmacSha256 => None,
        SigningMode::StandardWebhooks => header(headers, "webhook-id").map(|id| (id, "")),
        SigningMode::Github => Some(github_delivery(headers)?),
        SigningMode::Stripe => {
            let id = payload
                .get("id")
                .and_then(Value::as_str)
                .filter(|id| usable_id(id))
                .ok_or_else(|| {
                    missing_delivery_id(
                        "a Stripe event has an `id` (`evt_…`): 1 to 200 visible ASCII characters",
                    )
                })?;
            Some((id, ""))
        }
        SigningMode::Slack => payload
            .get("event_id")
            .and_then(Value::as_str)
            .filter(|id| usable_id(id))
            .map(|id| (id, "")),
    })
}

fn missing_delivery_id(message: &str) -> ApiError {
    ApiError::bad_request("missing_delivery_id", message)
}

/// A GitHub call's `X-GitHub-Delivery` (required: 400 without it) and `X-GitHub-Event`
/// (may be absent): the delivery id 1–100 letters, digits and `-`, the event 0–64 of
/// lowercase letters, digits, `_` and `.`.
pub(super) fn github_delivery(headers: &HeaderMap) -> Result<(&str, &str), ApiError> {
    let id = header(headers, "x-github-delivery")
        .filter(|id| {
            (1..=100).contains(&id.len())
                && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
        .ok_or_else(|| {
            missing_delivery_id(
                "X-GitHub-Delivery is required: 1 to 100 letters, digits and dashes",
            )
        })?;
    let event = header(headers, "x-github-event").unwrap_or_default();
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

/// What an authenticated call of a sender's configuration check is answered with, instead of
/// a run: GitHub's `ping` event (`{"pong": true}`), Slack's `url_verification` (its
/// `challenge`, which must be a string: else 400).
pub(super) fn handshake(
    mode: SigningMode,
    headers: &HeaderMap,
    payload: &Map<String, Value>,
) -> Result<Option<Value>, ApiError> {
    match mode {
        SigningMode::Github if header(headers, "x-github-event") == Some("ping") => {
            Ok(Some(serde_json::json!({ "pong": true })))
        }
        SigningMode::Slack
            if payload.get("type").and_then(Value::as_str) == Some("url_verification") =>
        {
            let challenge = payload
                .get("challenge")
                .and_then(Value::as_str)
                .ok_or_else(|| {
                    ApiError::bad_request(
                        "invalid_body",
                        "a url_verification body has a `challenge` string",
                    )
                })?;
            Ok(Some(serde_json::json!({ "challenge": challenge })))
        }
        _ => Ok(None),
    }
}
