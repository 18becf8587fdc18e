//! Hostile input over every operation of `/api/openapi.json`: for each operation the document
//! lists, every path parameter, query parameter and body field is sent each hostile value —
//! U+0000, lone surrogate escapes, 100 KB strings, both Unicode normalisation forms, numbers out
//! of range or past 64 bits, wrong types, explicit nulls — and every body is also sent nested
//! 10,000 deep, as invalid UTF-8 and as other JSON values. Every answer must be a 4xx or a
//! success with the documented error shape; none may be a 5xx or a dropped connection (what a
//! panic in a handler gives). Runs on both backends (`NEXUS_TEST_BACKEND=sqlite`).

use std::collections::BTreeMap;

use nexus_tests::{TestApp, str_at};
use serde_json::{Value, json};

/// Hostile JSON values, as raw JSON text (some are not what `serde_json` would write).
fn hostile_values() -> Vec<String> {
    let long = "x".repeat(100 * 1024);
    vec![
        r#""a\u0000b""#.to_owned(),
        r#""\u0000""#.to_owned(),
        r#""\ud800""#.to_owned(),
        r#""x\udc00y""#.to_owned(),
        format!("\"{long}\""),
        "\"\u{e9}t\u{e9}\"".to_owned(),
        "\"e\u{301}te\u{301}\"".to_owned(),
        "\"\u{202e}\u{fe0f}\u{feff}\"".to_owned(),
        r#""   ""#.to_owned(),
        r#""""#.to_owned(),
        r#""%00""#.to_owned(),
        "1e309".to_owned(),
        "-1e309".to_owned(),
        "9223372036854775808".to_owned(),
        "-9223372036854775809".to_owned(),
        "340282366920938463463374607431768211456".to_owned(),
        "1.5".to_owned(),
        "-1".to_owned(),
        "0".to_owned(),
        "true".to_owned(),
        "null".to_owned(),
        "[]".to_owned(),
        "{}".to_owned(),
        r#"{"kind":"http","url":"http://169.254.169.254/"}"#.to_owned(),
        r#"{"max":1.7976931348623157e308,"min":-1.7976931348623157e308,"tiny":5e-324,"u":18446744073709551615}"#.to_owned(),
        format!("{}1{}", "[".repeat(200), "]".repeat(200)),
    ]
}

/// Hostile path segments and query values (already URL-encoded).
fn hostile_segments() -> Vec<String> {
    vec![
        "%00".to_owned(),
        "a%00b".to_owned(),
        "%ED%A0%80".to_owned(),
        "%FF%FE".to_owned(),
        "..%2F..%2Fetc".to_owned(),
        "00000000-0000-0000-0000-000000000000".to_owned(),
        "ffffffff-ffff-ffff-ffff-ffffffffffff".to_owned(),
        "x".repeat(4096),
        "-1".to_owned(),
        "0".to_owned(),
        "99999999999999999999999".to_owned(),
        "1e309".to_owned(),
        "NaN".to_owned(),
        "%20".to_owned(),
    ]
}

/// Whole bodies that are hostile in themselves.
fn hostile_bodies() -> Vec<Vec<u8>> {
    let deep_array = format!("{}{}", "[".repeat(10_000), "]".repeat(10_000));
    let deep_object = format!("{}1{}", r#"{"a":"#.repeat(10_000), "}".repeat(10_000));
    let deep_payload = format!(
        r#"{{"payload":{}1{}}}"#,
        r#"{"a":"#.repeat(10_000),
        "}".repeat(10_000)
    );
    vec![
        deep_array.into_bytes(),
        deep_object.into_bytes(),
        deep_payload.into_bytes(),
        b"null".to_vec(),
        b"[]".to_vec(),
        b"\"text\"".to_vec(),
        b"{\"a\":".to_vec(),
        vec![0xff, 0xfe, b'{', b'}'],
        b"{\"name\":\"\xed\xa0\x80\"}".to_vec(),
    ]
}

/// Sends only the head of a request announcing a 3 MiB body and returns the status the server
/// answers with before any of the body is sent (`None` if it waits for the body).
async fn announce_huge_body(base: &str, method: &str, path: &str, token: &str) -> Option<u16> {
    let address = base.trim_start_matches("http://");
    let head = format!(
        "{} {path} HTTP/1.1\r\nhost: {address}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\n\r\n{{",
        method.to_uppercase(),
        3 * 1024 * 1024
    );
    nexus_tests::status_without_the_body(address, &head).await
}

/// The properties a request body schema names (for a `oneOf`, each variant's, with its `kind`).
fn body_shapes(doc: &Value, schema: &Value) -> Vec<(Option<String>, Vec<String>)> {
    let schema = match schema.get("$ref").and_then(Value::as_str) {
        Some(reference) => doc
            .pointer(&reference.replacen("#/", "/", 1))
            .cloned()
            .unwrap_or(Value::Null),
        None => schema.clone(),
    };
    let names = |s: &Value| -> Vec<String> {
        s.get("properties")
            .and_then(Value::as_object)
            .map(|p| p.keys().cloned().collect())
            .unwrap_or_default()
    };
    match schema.get("oneOf").and_then(Value::as_array) {
        Some(variants) => variants
            .iter()
            .map(|v| {
                let kind = v
                    .pointer("/properties/kind/enum/0")
                    .and_then(Value::as_str)
                    .map(str::to_owned);
                (kind, names(v))
            })
            .collect(),
        None => vec![(None, names(&schema))],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_operation_answers_hostile_input_with_a_4xx_and_never_a_5xx() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let board = app.board();
    // Real ids, so that the requests reach past the lookups.
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let webhook = app
        .seed_trigger(&routine, &json!({ "kind": "webhook" }))
        .await;
    let issue = board
        .create_issue(
            &team.company,
            &json!({ "title": "t", "assigneeAgentId": team.agent }),
        )
        .await
        .expect(201)
        .id();
    let run = board
        .run_routine(&routine, &json!({}))
        .await
        .expect(202)
        .id();
    let heartbeat = app
        .caller(Some(&team.key))
        .my_heartbeat_runs("")
        .await
        .expect(200);
    let heartbeat = str_at(&heartbeat.body, "/heartbeatRuns/0/id");
    let key = board.create_agent_key(&team.agent).await.expect(201).id();
    let channel = board
        .send(
            reqwest::Method::POST,
            &format!("/api/companies/{}/notification-channels", team.company),
            Some(&json!({"name": "c", "kind": "slack", "url": "https://hooks.example.com/x", "events": ["test"]})),
        )
        .await
        .expect(201);
    let channel = str_at(&channel.body, "/channel/id");
    let ids: BTreeMap<&str, String> = BTreeMap::from([
        ("channelId", channel),
        ("companyId", team.company.clone()),
        ("agentId", team.agent.clone()),
        ("routineId", routine.clone()),
        ("triggerId", str_at(&webhook, "/trigger/id")),
        ("publicId", str_at(&webhook, "/trigger/publicId")),
        ("issueId", issue),
        ("runId", run),
        ("id", heartbeat),
        ("keyId", key),
    ]);

    let doc = board.openapi().await.expect(200).body;
    let mut operations: Vec<(String, String, Value)> = Vec::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for (method, operation) in item.as_object().expect("path item") {
            operations.push((path.clone(), method.clone(), operation.clone()));
        }
    }
    // Deleting comes last, so the ids above stay valid for everything else.
    operations.sort_by_key(|(path, method, _)| (method == "delete", path.clone()));
    assert!(operations.len() >= 30, "{} operations", operations.len());

    let http = nexus_tests::http_client();
    let token = app.board_token.clone();
    let mut sent = 0usize;
    let mut failures = Vec::new();
    let (mut announced, mut refused_late) = (0usize, Vec::new());
    let mut send = async |method: &str, path: &str, body: Option<Vec<u8>>| {
        let url = format!("{}{path}", app.base);
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method");
        let mut request = http.request(method.clone(), &url).bearer_auth(&token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body);
        }
        sent += 1;
        let outcome = match request.send().await {
            Err(error) => Some(format!("no answer ({error})")),
            // An accepted event stream never ends: its answer is the status alone.
            Ok(response)
                if response.status().is_success()
                    && response
                        .headers()
                        .get("content-type")
                        .is_some_and(|t| t.as_bytes().starts_with(b"text/event-stream")) =>
            {
                None
            }
            Ok(response) => {
                let status = response.status().as_u16();
                let text = response.text().await.unwrap_or_default();
                if status >= 500 {
                    Some(format!("{status}: {text}"))
                } else if status >= 400 {
                    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
                    (!(body["code"].is_string() && body["error"].is_string()))
                        .then(|| format!("{status} without the error shape: {text}"))
                } else {
                    None
                }
            }
        };
        if let Some(problem) = outcome {
            failures.push(format!(
                "{method} {}: {problem}",
                &url[..url.len().min(200)]
            ));
        }
    };

    for (path, method, operation) in &operations {
        let params: Vec<Value> = operation["parameters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let fill = |path: &str, hostile: Option<(&str, &str)>| {
            let mut filled = path.to_owned();
            for p in params.iter().filter(|p| p["in"] == "path") {
                let name = p["name"].as_str().unwrap_or_default();
                let value = match hostile {
                    Some((target, value)) if target == name => value.to_owned(),
                    _ => ids.get(name).cloned().unwrap_or_else(|| "x".to_owned()),
                };
                filled = filled.replace(&format!("{{{name}}}"), &value);
            }
            filled
        };
        // Hostile path parameters.
        for p in params.iter().filter(|p| p["in"] == "path") {
            let name = p["name"].as_str().unwrap_or_default();
            for segment in hostile_segments() {
                send(method, &fill(path, Some((name, &segment))), None).await;
            }
        }
        // Hostile query parameters.
        for p in params.iter().filter(|p| p["in"] == "query") {
            let name = p["name"].as_str().unwrap_or_default();
            for value in hostile_segments() {
                let target = format!("{}?{name}={value}", fill(path, None));
                send(method, &target, None).await;
            }
            send(method, &format!("{}?{name}", fill(path, None)), None).await;
            send(
                method,
                &format!("{}?{name}=1&{name}=2", fill(path, None)),
                None,
            )
            .await;
        }
        // Hostile bodies and body fields.
        if let Some(schema) = operation.pointer("/requestBody/content/application~1json/schema") {
            let target = fill(path, None);
            // A body announced far over the limit is refused before it is read.
            announced += 1;
            match announce_huge_body(&app.base, method, &target, &token).await {
                Some(413) => {}
                other => refused_late.push(format!("{method} {target}: a 3 MiB body announced, answered {other:?} instead of 413 before the body")),
            }
            for body in hostile_bodies() {
                send(method, &target, Some(body)).await;
            }
            for (kind, fields) in body_shapes(&doc, schema) {
                for field in fields.iter().filter(|f| *f != "kind") {
                    for value in hostile_values() {
                        let kind = kind
                            .as_ref()
                            .map(|k| format!(r#""kind":"{k}","#))
                            .unwrap_or_default();
                        let body = format!(r#"{{{kind}"{field}":{value}}}"#);
                        send(method, &target, Some(body.into_bytes())).await;
                    }
                }
            }
        }
        send(method, &fill(path, None), None).await;
    }
    let sent = sent + announced;
    failures.extend(refused_late);
    eprintln!(
        "hostile input: {sent} requests over {} operations",
        operations.len()
    );
    assert!(sent > 2000, "only {sent} requests");
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed:\n{}",
        failures.len(),
        failures[..failures.len().min(30)].join("\n")
    );
}
