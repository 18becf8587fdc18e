//! The OpenAPI 3.1 document, assembled from the handlers' annotations, served at
//! `GET /api/openapi.json`; and the annotated operational endpoints.

use std::sync::Arc;

use axum::{Json, Router, extract::State, response::Response};
use nexus_shared::ops::{self, Health};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{error::ErrorBody, state::AppState};

#[derive(OpenApi)]
#[openapi(
    info(title = "Nexus Routines API", description = "Routines, triggers, runs and the resources they refer to."),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    components(schemas(ErrorBody)),
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Splits the annotated routes into the axum router and the document, adding the operational
/// endpoints and the document's own path to the document, and the error answers every
/// operation can give (see [`complete_error_answers`]).
pub(crate) fn split(api: OpenApiRouter<AppState>) -> (Router<AppState>, serde_json::Value) {
    let documented_only: OpenApiRouter<AppState> = OpenApiRouter::new()
        .routes(routes!(openapi_json))
        .routes(routes!(healthz_doc))
        .routes(routes!(readyz_doc))
        .routes(routes!(metrics_doc));
    let (_, extra) = documented_only.split_for_parts();
    let (router, mut doc) = OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(api)
        .split_for_parts();
    doc.merge(extra);
    let mut doc = serde_json::to_value(doc).unwrap_or_default();
    complete_error_answers(&mut doc);
    fold_inline_descriptions(&mut doc);
    distribute_tagged_unions(&mut doc);
    for (name, nullable) in crate::routes::request_bodies() {
        if let Some(schema) = doc.pointer_mut(&format!("/components/schemas/{name}")) {
            refuse_nulls(schema, nullable);
        }
    }
    (router, doc)
}

/// The generator shows every optional field of a request body as accepting `null`; the API
/// refuses an explicit `null` (400) except for the fields in `nullable`. This removes `null`
/// from the others, in the schema and in each variant of a `oneOf`.
fn refuse_nulls(schema: &mut serde_json::Value, nullable: &[&str]) {
    if let Some(variants) = schema
        .get_mut("oneOf")
        .and_then(serde_json::Value::as_array_mut)
    {
        for variant in variants {
            // Each kind's fields alone: the bodies refuse unknown fields (400).
            if variant.get("properties").is_some() {
                variant["additionalProperties"] = false.into();
            }
            refuse_nulls(variant, nullable);
        }
    }
    let Some(properties) = schema
        .get_mut("properties")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for (name, property) in properties {
        if nullable.contains(&name.as_str()) {
            continue;
        }
        let Some(property) = property.as_object_mut() else {
            continue;
        };
        if let Some(types) = property
            .get_mut("type")
            .and_then(serde_json::Value::as_array_mut)
        {
            types.retain(|t| t != "null");
            if types.len() == 1 {
                let only = types.remove(0);
                property.insert("type".to_owned(), only);
            }
        }
        let single = property
            .get_mut("oneOf")
            .and_then(serde_json::Value::as_array_mut)
            .and_then(|variants| {
                variants.retain(|v| v.get("type").is_none_or(|t| t != "null"));
                (variants.len() == 1).then(|| variants.remove(0))
            });
        if let Some(serde_json::Value::Object(only)) = single {
            property.remove("oneOf");
            for (key, value) in only {
                property.entry(key).or_insert(value);
            }
        }
    }
}

/// A field whose schema is inlined from its type and that carries a doc comment comes out of
/// the generator as `allOf: [<the type's schema>, {description, type: object}]`, which no
/// string satisfies; this folds the description into the schema itself, everywhere.
fn fold_inline_descriptions(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            let folded = match map.get("allOf").and_then(serde_json::Value::as_array) {
                Some(parts) if parts.len() == 2 => {
                    let note = parts[1].as_object().filter(|note| {
                        note.keys().all(|k| k == "description" || k == "type")
                            && note.get("type").is_none_or(|t| t == "object")
                    });
                    match (parts[0].as_object(), note) {
                        (Some(schema), Some(note)) => {
                            let mut schema = schema.clone();
                            if let Some(description) = note.get("description") {
                                schema.insert("description".to_owned(), description.clone());
                            }
                            Some(schema)
                        }
                        _ => None,
                    }
                }
                _ => None,
            };
            if let Some(schema) = folded {
                map.remove("allOf");
                map.extend(schema);
            }
            map.values_mut().for_each(fold_inline_descriptions);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(fold_inline_descriptions),
        _ => {}
    }
}

/// The answers every operation of the API can give whatever its handler does, added to each
/// operation that does not document them itself: 400 (a path id, query or body that does not
/// parse), 401 (no or a bad token, on operations that need one), 404 (an id in the path that
/// names nothing the caller can see), 408 (the request was not complete within the request
/// timeout), 413 and 415 (a body too large or not JSON, on operations that take one) and 503
/// (the database or Redis is unreachable, or a statement or lock wait timed out: retry).
fn complete_error_answers(doc: &mut serde_json::Value) {
    let error = |description: &str| {
        serde_json::json!({
            "description": description,
            "content": { "application/json": { "schema": { "$ref": "#/components/schemas/ErrorBody" } } }
        })
    };
    // Bodies whose fields are all optional may be left out (an empty body reads as `{}`).
    let optional_bodies: std::collections::HashSet<String> = doc
        .pointer("/components/schemas")
        .and_then(serde_json::Value::as_object)
        .map(|schemas| {
            schemas
                .iter()
                .filter(|(_, schema)| {
                    schema.get("type").is_some_and(|t| t == "object")
                        && schema
                            .get("required")
                            .and_then(serde_json::Value::as_array)
                            .is_none_or(Vec::is_empty)
                })
                .map(|(name, _)| format!("#/components/schemas/{name}"))
                .collect()
        })
        .unwrap_or_default();
    let Some(paths) = doc
        .get_mut("paths")
        .and_then(serde_json::Value::as_object_mut)
    else {
        return;
    };
    for (path, item) in paths {
        let Some(item) = item.as_object_mut() else {
            continue;
        };
        for responses in item
            .values_mut()
            .filter_map(|operation| operation.get_mut("responses"))
            .filter_map(serde_json::Value::as_object_mut)
        {
            describe_responses(responses);
        }
        if !path.starts_with("/api/") || path == "/api/openapi.json" {
            continue;
        }
        for (method, operation) in item.iter_mut() {
            if !matches!(method.as_str(), "get" | "post" | "put" | "patch" | "delete") {
                continue;
            }
            let public = operation
                .get("security")
                .and_then(serde_json::Value::as_array)
                .is_some_and(|all| {
                    all.iter()
                        .all(|r| r.as_object().is_some_and(serde_json::Map::is_empty))
                });
            let has_body = operation.get("requestBody").is_some();
            if let Some(body) = operation.get_mut("requestBody")
                && body
                    .pointer("/content/application~1json/schema/$ref")
                    .and_then(serde_json::Value::as_str)
                    .is_some_and(|name| optional_bodies.contains(name))
            {
                body["required"] = false.into();
            }
            let Some(responses) = operation
                .get_mut("responses")
                .and_then(serde_json::Value::as_object_mut)
            else {
                continue;
            };
            let mut add = |status: &str, description: &str| {
                responses
                    .entry(status.to_owned())
                    .or_insert_with(|| error(description));
            };
            add(
                "400",
                "Malformed input: a path id, query parameter or body that does not parse",
            );
            if !public {
                add("401", "No token, or an unknown or revoked one");
            }
            if path.contains('{') {
                add("404", "Nothing the caller can see has this id");
            }
            if has_body {
                add("413", "The body is too large");
                add("415", "The body is not JSON");
            }
            add(
                "408",
                "The request was not complete within the request timeout",
            );
            add(
                "503",
                "The database or Redis is unreachable, or a statement or lock wait timed out; \
                 retry after `Retry-After` seconds",
            );
        }
    }
}

/// A resource whose kind-specific fields are a tagged union flattened into it (a trigger: its
/// common fields, plus its kind's) comes out of the generator as `allOf: [<the union>, <the
/// common fields>]`. That is valid, but code generators cannot build a type from an `allOf` over
/// a `oneOf`; this spells it as the equivalent `oneOf` of one complete object per kind.
fn distribute_tagged_unions(doc: &mut serde_json::Value) {
    let Some(schemas) = doc
        .pointer("/components/schemas")
        .and_then(serde_json::Value::as_object)
        .cloned()
    else {
        return;
    };
    for (name, schema) in &schemas {
        let Some([union, common]) = schema
            .get("allOf")
            .and_then(serde_json::Value::as_array)
            .map(Vec::as_slice)
        else {
            continue;
        };
        let union = match union.get("$ref").and_then(serde_json::Value::as_str) {
            Some(reference) => reference
                .strip_prefix("#/components/schemas/")
                .and_then(|n| schemas.get(n))
                .unwrap_or(union),
            None => union,
        };
        let (Some(variants), Some(common)) = (
            union.get("oneOf").and_then(serde_json::Value::as_array),
            common.as_object(),
        ) else {
            continue;
        };
        let merged: Vec<serde_json::Value> = variants
            .iter()
            .map(|variant| {
                let mut variant = variant.clone();
                for key in ["properties", "required"] {
                    let extra = common.get(key).cloned().unwrap_or_default();
                    match (variant.get_mut(key), extra) {
                        (
                            Some(serde_json::Value::Object(mine)),
                            serde_json::Value::Object(more),
                        ) => {
                            mine.extend(more);
                        }
                        (Some(serde_json::Value::Array(mine)), serde_json::Value::Array(more)) => {
                            mine.extend(more);
                        }
                        (None, extra) if !extra.is_null() => {
                            variant[key] = extra;
                        }
                        _ => {}
                    }
                }
                variant["type"] = "object".into();
                variant
            })
            .collect();
        let mut flat = serde_json::Map::new();
        if let Some(description) = schema.get("description") {
            flat.insert("description".to_owned(), description.clone());
        }
        flat.insert("oneOf".to_owned(), merged.into());
        doc["components"]["schemas"][name] = flat.into();
    }
}

/// Gives every response a description (required by OpenAPI): the status's reason phrase where
/// the handler's annotation has none.
fn describe_responses(responses: &mut serde_json::Map<String, serde_json::Value>) {
    for (status, response) in responses.iter_mut() {
        // Every response has a description (the status's reason phrase by default).
        if let Some(response) = response.as_object_mut()
            && !response.contains_key("description")
        {
            let reason = status
                .parse::<u16>()
                .ok()
                .and_then(|code| axum::http::StatusCode::from_u16(code).ok())
                .and_then(|code| code.canonical_reason())
                .unwrap_or("Answer");
            response.insert("description".to_owned(), reason.into());
        }
    }
}

/// Serves the document.
pub(crate) async fn document(doc: Arc<serde_json::Value>) -> Json<serde_json::Value> {
    Json((*doc).clone())
}

pub(crate) async fn healthz() -> Response {
    ops::healthz().await
}

pub(crate) async fn readyz(state: State<Health>) -> Response {
    ops::readyz(state).await
}

pub(crate) async fn metrics() -> Response {
    ops::metrics().await
}

// The handlers below only carry documentation: the real handlers above are routed directly
// because they use another state than the API's.

/// The OpenAPI 3.1 document of this API.
#[utoipa::path(get, path = "/api/openapi.json", tag = "operations", security(()),
    responses((status = 200, description = "The OpenAPI document", content_type = "application/json")))]
async fn openapi_json() {}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "operations", security(()),
    responses((status = 200, description = "The process is alive")))]
async fn healthz_doc() {}

/// Readiness: the database and Redis answer and the process is not shutting down.
#[utoipa::path(get, path = "/readyz", tag = "operations", security(()),
    responses((status = 200, description = "Ready"), (status = 503, body = ErrorBody)))]
async fn readyz_doc() {}

/// Prometheus metrics.
#[utoipa::path(get, path = "/metrics", tag = "operations", security(()),
    responses((status = 200, description = "Prometheus text format", content_type = "text/plain")))]
async fn metrics_doc() {}
