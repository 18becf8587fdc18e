//! `GET /api/routines/{id}/upcoming?count=100` on a routine at the trigger cap (50 schedule
//! triggers, half of them in a time zone with daylight saving) against the same call on a
//! routine with one trigger, through `nexus serve`: the bound is that the first costs about
//! what the second does, not fifty times as much.

use std::time::Instant;

use serde_json::{Value, json};

use crate::{
    cluster::{BOARD, Cluster},
    machine::percentile,
};

pub(crate) async fn run(calls: usize) -> anyhow::Result<()> {
    let calls = calls.clamp(10, 10_000);
    let mut cluster = Cluster::new().await;
    let api = cluster
        .start("nexus serve", "nexus", &["serve"], &[])
        .await?;
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let response = http
                .post(format!("{api}{path}"))
                .bearer_auth(BOARD)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            Ok::<Value, anyhow::Error>(response.json().await?)
        }
    };
    let company = post("/api/companies".to_owned(), json!({ "name": "Bench" })).await?;
    let company = company["id"].as_str().unwrap_or_default().to_owned();
    let agent = post(
        format!("/api/companies/{company}/agents"),
        json!({ "name": "Ada" }),
    )
    .await?;
    let project = post(
        format!("/api/companies/{company}/projects"),
        json!({ "name": "Ops" }),
    )
    .await?;
    let routine = |title: &str| {
        post(
            format!("/api/companies/{company}/routines"),
            json!({ "title": title, "assigneeAgentId": agent["agent"]["id"], "projectId": project["id"] }),
        )
    };
    let one = routine("one trigger").await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let capped = routine("fifty triggers").await?["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    post(
        format!("/api/routines/{one}/triggers"),
        json!({ "kind": "schedule", "cronExpression": "*/7 * * * *", "timezone": "Europe/Amsterdam" }),
    )
    .await?;
    for n in 0..50 {
        let zone = if n % 2 == 0 {
            "Europe/Amsterdam"
        } else {
            "UTC"
        };
        post(
            format!("/api/routines/{capped}/triggers"),
            json!({ "kind": "schedule", "cronExpression": format!("{} */{} * * *", n % 60, 1 + n % 5),
                    "timezone": zone }),
        )
        .await?;
    }
    let mut figures = Vec::new();
    for (label, routine) in [("1 trigger", &one), ("50 triggers", &capped)] {
        let mut took = Vec::with_capacity(calls);
        for _ in 0..calls {
            let started = Instant::now();
            let response = http
                .get(format!("{api}/api/routines/{routine}/upcoming?count=100"))
                .bearer_auth(BOARD)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "upcoming: {}",
                response.status()
            );
            let body: Value = response.json().await?;
            anyhow::ensure!(
                body["fires"].as_array().map(Vec::len) == Some(100),
                "100 fires"
            );
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let (p50, p99) = (percentile(&took, 0.50), percentile(&took, 0.99));
        println!("upcoming?count=100, {label}: {calls} calls, p50 {p50:.2} ms, p99 {p99:.2} ms");
        figures.push((p50, p99));
    }
    println!(
        "ratio 50 triggers / 1 trigger: p50 {:.2}x, p99 {:.2}x",
        figures[1].0 / figures[0].0,
        figures[1].1 / figures[0].1
    );
    Ok(())
}
