//! The error model of the API: one body shape, `{"error", "code", "details"?}`, and the
//! extractors that turn malformed input into it (strict JSON bodies, query strings and path
//! segments are 400; a wrong content type 415; a body over the limit 413).

use axum::{
    Json,
    extract::{
        FromRequest, FromRequestParts, Request,
        rejection::{PathRejection, QueryRejection},
    },
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use nexus_shared::store::{RefusalKind, StoreError};
use serde::{Deserialize as _, Serialize, de::DeserializeOwned};
use serde_json::json;
use utoipa::ToSchema;

/// The body of every error response.
#[derive(Debug, Serialize, ToSchema)]
pub struct ErrorBody {
    /// A sentence for humans.
    pub error: String,
    /// A stable snake_case code for programs.
    pub code: String,
    /// Structured details, e.g. `{"field": "title"}` for a 422.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub details: Option<serde_json::Value>,
}

/// An error answer of the API.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Option<serde_json::Value>,
    /// The internal cause of a 5xx: logged, never sent.
    cause: Option<anyhow::Error>,
    /// Extra response headers (`Retry-After`).
    headers: Vec<(axum::http::HeaderName, axum::http::HeaderValue)>,
}

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: None,
            cause: None,
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    #[must_use]
    pub fn with_header(
        mut self,
        name: axum::http::HeaderName,
        value: axum::http::HeaderValue,
    ) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds structured details.
    #[must_use]
    pub fn with_details(mut self, details: serde_json::Value) -> Self {
        self.details = Some(details);
        self
    }

    /// 400: the request is malformed.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    /// 401: no valid credentials. The same body whatever the cause.
    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required",
        )
    }

    /// 403: authenticated but not allowed.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    /// 404: nothing the caller can see has this address.
    pub fn not_found(what: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("{what} not found"),
        )
    }

    /// 409: conflicts with the current state.
    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    /// 422 naming the request field whose value is out of range or otherwise invalid.
    pub fn invalid_field(field: &str, problem: &str) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_field",
            format!("{field} {problem}"),
        )
        .with_details(json!({ "field": field }))
    }

    /// 500: a bug; `cause` is logged.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "internal error",
            )
        }
    }

    /// 503: a dependency (the database) is unreachable; `cause` is logged.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            cause: Some(cause.into()),
            ..Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "unavailable",
                "the service is temporarily unavailable; retry later",
            )
            .with_header(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from_static("1"),
            )
        }
    }

    /// The status code.
    #[must_use]
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause
            && self.status.is_server_error()
        {
            tracing::error!(
                status = self.status.as_u16(),
                error = format!("{cause:#}"),
                "request failed"
            );
        }
        let body = ErrorBody {
            error: self.message,
            code: self.code.to_owned(),
            details: self.details,
        };
        let mut response = (self.status, Json(body)).into_response();
        response.headers_mut().extend(self.headers);
        response
    }
}

impl From<StoreError> for ApiError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::not_found("resource"),
            StoreError::InvalidReference { field } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "invalid_reference",
                format!("{field} does not name a resource of this company"),
            )
            .with_details(json!({ "field": field })),
            StoreError::Refused(refusal) => {
                let status = match refusal.kind() {
                    RefusalKind::Conflict => StatusCode::CONFLICT,
                    RefusalKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
                };
                Self::new(status, refusal.code(), refusal.to_string())
            }
            StoreError::Database(e) if is_unavailable(&e) => Self::unavailable(e),
            // A value the database cannot hold (SQLSTATE class 22, "data exception"): the
            // edge should have refused it, but it is the caller's input, not a fault.
            StoreError::Database(sqlx::Error::Database(db))
                if db.code().is_some_and(|c| c.starts_with("22")) =>
            {
                tracing::warn!(error = %db, "the database refused a value the API let through");
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "invalid_value",
                    "a value in the request cannot be stored",
                )
            }
            StoreError::Database(e) => Self::internal(e),
        }
    }
}

fn is_unavailable(error: &sqlx::Error) -> bool {
    matches!(
        error,
        sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
    ) || matches!(error, sqlx::Error::Database(db) if db.code().is_some_and(|c| {
        // 57P: the server is shutting down or restarting; 08: the connection failed; 53: the
        // server is out of connections, memory or disk; 57014: the statement ran past
        // `statement_timeout`; 55P03: a lock was not granted within `lock_timeout`; 55000 and
        // 3D000: the database does not accept connections now, or is gone (seen when a new
        // session is opened); 28: the server refused the credentials. Retry later, all.
        c.starts_with("57P")
            || c.starts_with("08")
            || c.starts_with("53")
            || c.starts_with("28")
            || matches!(&*c, "57014" | "55P03" | "55000" | "3D000")
    }))
}

/// A request body: which of its fields accept an explicit `null` (it clears the value, or
/// means "none" at creation). `null` for any other field is 400: it would otherwise read as
/// "absent" and be silently ignored.
pub trait RequestBody {
    /// The fields (as sent, camelCase) that may be `null`.
    const NULLABLE: &'static [&'static str] = &[];
}

/// A JSON body parsed strictly: unknown fields, wrong types, an explicit `null` for a field
/// that cannot be cleared and malformed JSON are 400; a body with another content type 415. An
/// empty body (with or without a content type) reads as `{}`, so a POST whose fields are all
/// optional needs none, and one with required fields is 400 naming the missing field.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned + RequestBody, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .map(|value| is_json_content_type(value.to_str().unwrap_or_default()));
        // A body announced over the limit is refused before any of it is read.
        let declared = req
            .headers()
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > crate::MAX_BODY_BYTES as u64) {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "payload_too_large",
                "the request body is too large",
            ));
        }
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        "the request body is too large",
                    )
                } else {
                    ApiError::bad_request("invalid_body", rejection.body_text())
                }
            })?;
        let value = if bytes.iter().all(u8::is_ascii_whitespace) {
            serde_json::Value::Object(serde_json::Map::new())
        } else if is_json == Some(true) {
            serde_json::from_slice::<serde_json::Value>(&bytes).map_err(|e| {
                ApiError::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
            })?
        } else {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "the request body must be JSON with content type application/json",
            ));
        };
        // Parse to a JSON value first: serde would otherwise accept an array in place of an
        // object (structs deserialise from sequences).
        let Some(object) = value.as_object() else {
            return Err(ApiError::bad_request(
                "invalid_body",
                "the body must be a JSON object",
            ));
        };
        if let Some((name, _)) = object
            .iter()
            .find(|(name, value)| value.is_null() && !T::NULLABLE.contains(&name.as_str()))
        {
            return Err(ApiError::bad_request(
                "invalid_body",
                format!("{name} cannot be null; leave it out to keep its value"),
            )
            .with_details(json!({ "field": name })));
        }
        serde_json::from_value(value).map(Self).map_err(|e| {
            ApiError::bad_request(
                "invalid_body",
                format!("the body does not fit this endpoint: {e}"),
            )
        })
    }
}

/// Whether a content type names JSON: `application/json` or `application/<x>+json`, with any
/// parameters.
pub(crate) fn is_json_content_type(value: &str) -> bool {
    let essence = value
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || essence.starts_with("application/") && essence.ends_with("+json")
}

/// Query parameters parsed strictly: unknown parameters and values of the wrong type are 400.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Self(q.0))
            .map_err(|e: QueryRejection| ApiError::bad_request("invalid_query", e.body_text()))
    }
}

/// Path parameters; an id that is not a UUID is 400.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|p| Self(p.0))
            .map_err(|e: PathRejection| ApiError::bad_request("invalid_path", e.body_text()))
    }
}

/// Deserialises an optional integer field that JSON may spell as a whole number with a
/// fraction (`25.0` is the integer 25 in JSON Schema); a fraction that is not zero, or a number
/// beyond 64 bits, is a type error (400).
///
/// # Errors
/// Not a whole number.
pub(crate) fn whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<i64>, D::Error> {
    use serde::de::Error as _;
    let number = serde_json::Number::deserialize(d)?;
    if let Some(n) = number.as_i64() {
        return Ok(Some(n));
    }
    match number.as_f64() {
        #[allow(clippy::cast_possible_truncation, clippy::cast_precision_loss)]
        Some(f) if f.fract() == 0.0 && f >= i64::MIN as f64 && f < i64::MAX as f64 => {
            Ok(Some(f as i64))
        }
        _ => Err(D::Error::custom(format!(
            "{number} is not a whole number in range"
        ))),
    }
}

/// Deserialises a nullable integer field: absent (outer `None`, with `#[serde(default)]`),
/// `null` (`Some(None)`) or a whole number as [`whole_number`] reads it.
///
/// # Errors
/// Not a whole number.
pub(crate) fn nullable_whole_number<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Option<Option<i64>>, D::Error> {
    let value = Option::<serde_json::Number>::deserialize(d)?;
    value
        .map(|number| whole_number(number).map_err(serde::de::Error::custom))
        .transpose()
        .map(|n| Some(n.flatten()))
}

/// Parses a request field into a domain value, answering 422 naming the field.
///
/// # Errors
/// 422 `invalid_field` with the parser's sentence.
pub fn field<T, E: std::fmt::Display>(name: &str, parsed: Result<T, E>) -> Result<T, ApiError> {
    parsed.map_err(|e| ApiError::invalid_field(name, &e.to_string()))
}

/// Resolves a `limit` query parameter: absent → `default`, above `max` → `max`, below 1 → 422.
///
/// # Errors
/// 422 when `value` is below 1.
pub fn limit(value: Option<i64>, default: i64, max: i64) -> Result<i64, ApiError> {
    match value {
        None => Ok(default),
        Some(n) if n < 1 => Err(ApiError::invalid_field("limit", "must be at least 1")),
        Some(n) => Ok(n.min(max)),
    }
}

/// 404 for every path no route matches.
pub async fn no_route() -> ApiError {
    ApiError::not_found("route")
}

/// 405 for a known path with another method.
pub async fn wrong_method() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this path",
    )
}

/// Names what was not found in the 404 of a store lookup.
pub trait Found<T> {
    /// Maps [`StoreError::NotFound`] to a 404 naming `what`; other errors as usual.
    ///
    /// # Errors
    /// The mapped error.
    fn found(self, what: &str) -> Result<T, ApiError>;
}

impl<T> Found<T> for Result<T, StoreError> {
    fn found(self, what: &str) -> Result<T, ApiError> {
        self.map_err(|e| match e {
            StoreError::NotFound => ApiError::not_found(what),
            other => other.into(),
        })
    }
}
