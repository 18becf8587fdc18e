//! Requests to the server: the base URL and token, and the mapping of answers to exit codes.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde_json::Value;

use super::{Args, Failure};

/// The server a command talks to.
pub(crate) struct Api {
    base: String,
    /// Sent as `Authorization: Bearer`; never printed (no `Debug`).
    token: String,
    http: reqwest::Client,
}

/// Where commands go when neither `--url` nor `NEXUS_URL` says.
const DEFAULT_URL: &str = "http://127.0.0.1:8080";

impl Api {
    /// From `--url`/`--token`, else `NEXUS_URL`/`NEXUS_TOKEN`.
    pub(crate) fn from_args(args: &Args) -> Result<Self, Failure> {
        let from_env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let base = args
            .value("--url")
            .map(str::to_owned)
            .or_else(|| from_env("NEXUS_URL"))
            .unwrap_or_else(|| DEFAULT_URL.to_owned());
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Failure::Usage(format!(
                "the server URL must start with http:// or https:// (got {base:?})"
            )));
        }
        let token = args
            .value("--token")
            .map(str::to_owned)
            .or_else(|| from_env("NEXUS_TOKEN"))
            .ok_or_else(|| {
                Failure::Usage(
                    "no token: set NEXUS_TOKEN (a board token or an agent key) or pass --token"
                        .to_owned(),
                )
            })?;
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Failure::Server(format!("error: the HTTP client: {e}")))?;
        Ok(Self {
            base: base.trim_end_matches('/').to_owned(),
            token,
            http,
        })
    }

    /// `GET path`: the answer's JSON.
    pub(crate) async fn get(&self, path: &str) -> Result<Value, Failure> {
        self.send::<()>(Method::GET, path, None).await
    }

    /// `POST path` with `body` (none: an empty body).
    pub(crate) async fn post<B: Serialize>(
        &self,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, Failure> {
        self.send(Method::POST, path, body).await
    }

    /// `PATCH path` with `body`.
    pub(crate) async fn patch<B: Serialize>(&self, path: &str, body: &B) -> Result<Value, Failure> {
        self.send(Method::PATCH, path, Some(body)).await
    }

    /// `DELETE path`.
    pub(crate) async fn delete(&self, path: &str) -> Result<Value, Failure> {
        self.send::<()>(Method::DELETE, path, None).await
    }

    async fn send<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        body: Option<&B>,
    ) -> Result<Value, Failure> {
        let mut request = self
            .http
            .request(method.clone(), format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            let cause = if e.is_timeout() {
                "timed out"
            } else if e.is_connect() {
                "cannot connect"
            } else {
                "the request failed"
            };
            Failure::Server(format!("error: {cause}: {} ({method} {path})", self.base))
        })?;
        let status = response.status();
        let text = response.text().await.map_err(|_| {
            Failure::Server(format!(
                "error: the answer to {method} {path} was cut short"
            ))
        })?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|_| {
                Failure::Server(format!("error: the answer to {method} {path} is not JSON"))
            });
        }
        Err(failure(status, &text))
    }
}

/// The failure an error answer means: one line with the API's error code and sentence.
fn failure(status: StatusCode, text: &str) -> Failure {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = body["code"].as_str().unwrap_or("error");
    let sentence = body["error"]
        .as_str()
        .map_or_else(|| status.to_string(), str::to_owned);
    let line = format!("error: {code}: {sentence} ({})", status.as_u16());
    match status.as_u16() {
        404 => Failure::NotFound(line),
        400..=499 => Failure::Refused(line),
        _ => Failure::Server(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_map_to_exit_codes_with_the_api_error_code() {
        let body =
            r#"{"error": "the routine is archived; it cannot run", "code": "routine_archived"}"#;
        let refused = failure(StatusCode::CONFLICT, body);
        assert_eq!(refused.code(), 4);
        assert_eq!(
            refused.line(),
            "error: routine_archived: the routine is archived; it cannot run (409)"
        );
        assert_eq!(failure(StatusCode::NOT_FOUND, "{}").code(), 3);
        assert_eq!(failure(StatusCode::UNAUTHORIZED, "{}").code(), 4);
        assert_eq!(failure(StatusCode::UNPROCESSABLE_ENTITY, "{}").code(), 4);
        assert_eq!(failure(StatusCode::BAD_GATEWAY, "<html>").code(), 5);
    }
}
