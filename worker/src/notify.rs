//! Notification deliveries: a channel's notification POSTed as `{type, timestamp, data}`,
//! signed per Standard Webhooks for a `webhook` channel (`webhook-id` is the notification's id,
//! the same on every attempt), or as `{"text": …}` to a Slack incoming webhook. Any 2xx
//! acknowledges it.

use nexus_shared::{engine::notify::payload, outbound::FORBIDDEN_ADDRESS, store::Outgoing};

use crate::wakeup::{DeliveryError, post};

/// Why a notification was not acknowledged.
#[derive(Debug)]
pub(crate) struct Refused {
    /// The answer's status, if there was an answer.
    pub(crate) status_code: Option<i32>,
    /// In words (`forbidden_address` for a refused destination).
    pub(crate) error: String,
    /// Whether trying again cannot help (a forbidden address, a bad secret).
    pub(crate) hopeless: bool,
}

/// POSTs the notification; the status of a 2xx answer.
pub(crate) async fn deliver(
    http: &reqwest::Client,
    outgoing: &Outgoing,
    timestamp: i64,
    allow_private: bool,
) -> Result<i32, Refused> {
    let id = outgoing.id.to_string();
    let body = serde_json::to_vec(&payload(outgoing.kind, &outgoing.body)).unwrap_or_default();
    let signing = outgoing
        .secret
        .as_deref()
        .map(|secret| (id.as_str(), secret, timestamp));
    let response = post(http, &outgoing.url, signing, body, allow_private)
        .await
        .map_err(|e| match e {
            DeliveryError::Forbidden => Refused {
                status_code: None,
                error: FORBIDDEN_ADDRESS.to_owned(),
                hopeless: true,
            },
            DeliveryError::BadSecret => Refused {
                status_code: None,
                error: e.to_string(),
                hopeless: true,
            },
            DeliveryError::NotAcknowledged(why) => Refused {
                status_code: None,
                error: why,
                hopeless: false,
            },
            DeliveryError::Busy(_) => Refused {
                status_code: None,
                error: e.to_string(),
                hopeless: false,
            },
        })?;
    let status = i32::from(response.status().as_u16());
    if response.status().is_success() {
        Ok(status)
    } else {
        Err(Refused {
            status_code: Some(status),
            error: format!("HTTP {status}"),
            hopeless: false,
        })
    }
}
