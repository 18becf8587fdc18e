//! Requests signed as each signing mode's sender signs them, for the tests and benchmarks
//! that need many (the tests that check the formats themselves sign with the senders' own
//! libraries instead).

use crate::hmac_hex;

/// The headers of a webhook call in `mode` carrying `body`, sent at `at` (Unix seconds) with
/// the delivery id `delivery` where the format has one, signed with `secret` (bearer: sent).
///
/// # Panics
/// In `standard_webhooks` mode, when `secret` is not a `whsec_` secret.
#[must_use]
pub fn signed_as(
    mode: &str,
    secret: &str,
    delivery: &str,
    at: i64,
    body: &[u8],
) -> Vec<(&'static str, String)> {
    let ts = at.to_string();
    match mode {
        "bearer" => vec![("authorization", format!("Bearer {secret}"))],
        "standard_webhooks" => {
            let key = nexus_shared::crypto::standard_webhooks_key(secret).expect("a whsec_ secret");
            let mac = nexus_shared::crypto::standard_webhooks_mac(&key, delivery, &ts, body);
            let signature = format!("v1,{}", nexus_shared::crypto::encode_base64(&mac));
            vec![
                ("webhook-id", delivery.to_owned()),
                ("webhook-timestamp", ts),
                ("webhook-signature", signature),
            ]
        }
        // GitHub signs the body alone.
        "github" => vec![
            ("x-github-delivery", delivery.to_owned()),
            ("x-github-event", "push".to_owned()),
            (
                "x-hub-signature-256",
                format!("sha256={}", hmac_hex(secret, &[body])),
            ),
        ],
        "stripe" => {
            let v1 = hmac_hex(secret, &[ts.as_bytes(), b".", body]);
            vec![("stripe-signature", format!("t={ts},v1={v1}"))]
        }
        "slack" => {
            let v0 = hmac_hex(secret, &[b"v0:", ts.as_bytes(), b":", body]);
            vec![
                ("x-slack-request-timestamp", ts),
                ("x-slack-signature", format!("v0={v0}")),
            ]
        }
        _ => {
            let signature = hmac_hex(secret, &[ts.as_bytes(), b".", body]);
            vec![
                ("x-paperclip-timestamp", ts),
                ("x-paperclip-signature", format!("sha256={signature}")),
            ]
        }
    }
}
