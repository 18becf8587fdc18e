//! Webhook ingestion: HMAC-signed fires, every one distinct (fresh timestamp and body, so the
//! replay memory is written each time), to one `nexus-api` and to two (round robin in the
//! client), at fixed concurrency for a fixed time. In the same run, the Postgres ceiling for
//! comparable work: `pgbench` inserting one row per transaction at the same concurrency.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use http_body_util::{BodyExt as _, Full};
use hyper::body::Bytes;
use serde_json::{Value, json};

use crate::{
    cluster::{BOARD, Cluster},
    machine::{CpuReading, percentile},
};

pub(crate) async fn run(concurrencies: &[usize], seconds: u64) -> anyhow::Result<()> {
    let seconds = seconds.clamp(2, 60);
    let mut cluster = Cluster::new().await;
    let env = [
        ("NEXUS_WEBHOOK_RATE_PER_SEC", "1000000".to_owned()),
        ("NEXUS_WEBHOOK_BURST", "1000000".to_owned()),
        ("NEXUS_DB_MAX_CONNECTIONS", "32".to_owned()),
    ];
    sqlx::raw_sql(
        "CREATE TABLE bench_ceiling (id bigserial PRIMARY KEY, payload jsonb NOT NULL, created_at timestamptz NOT NULL)",
    )
    .execute(&cluster.db.pool)
    .await?;
    // The ceilings first, while nothing else holds connections (pgbench opens one per client).
    let mut ceilings = Vec::new();
    for &concurrency in concurrencies {
        ceilings.push(pgbench(&cluster, concurrency, seconds)?);
    }
    let first = cluster.start("nexus-api 1", "nexus-api", &[], &env).await?;
    let second = cluster.start("nexus-api 2", "nexus-api", &[], &env).await?;
    let (path, secret) = webhook(&first).await?;
    println!(
        "webhook ingestion: HMAC-signed fires, each distinct, {seconds} s per row; no worker runs (ingestion only)"
    );
    println!(
        "Postgres ceiling: pgbench, one single-row INSERT + COMMIT per transaction, same concurrency\n"
    );
    println!(
        "{:>11} {:>9} {:>12} {:>9} {:>9} {:>8} {:>14} {:>8} {:>12} {:>34}",
        "concurrency",
        "apis",
        "accepted/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "pg ceiling/s",
        "ratio",
        "runs/commit",
        "cpu µs/fire pg/api/redis/client/all"
    );
    let mut accepted_total = 0;
    for (&concurrency, &ceiling) in concurrencies.iter().zip(&ceilings) {
        for apis in [vec![first.clone()], vec![first.clone(), second.clone()]] {
            let before = commits(&cluster).await?;
            let cpu = CpuReading::now();
            let result = fire(&apis, &path, &secret, concurrency, seconds).await;
            // The CPU a fire costs: steadier than the rate on a machine whose speed varies.
            let cpu = CpuReading::now().since(cpu);
            let after = commits(&cluster).await?;
            accepted_total += result.accepted;
            #[allow(clippy::cast_precision_loss)]
            let (per_commit, fires) = (
                (after.0 - before.0) as f64 / (after.1 - before.1).max(1) as f64,
                result.accepted.max(1) as f64,
            );
            println!(
                "{concurrency:>11} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>8} {ceiling:>14.0} {:>7.0}% {per_commit:>12.1} {:>34}",
                apis.len(),
                result.rate,
                result.p50,
                result.p99,
                result.errors,
                100.0 * result.rate / ceiling,
                format!(
                    "{:.0}/{:.0}/{:.0}/{:.0}/{:.0}",
                    cpu.postgres * 1e6 / fires,
                    cpu.nexus * 1e6 / fires,
                    cpu.redis * 1e6 / fires,
                    cpu.client * 1e6 / fires,
                    cpu.machine * 1e6 / fires
                )
            );
        }
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM routine_runs")
        .fetch_one(&cluster.db.pool)
        .await?;
    println!("\nfires answered 202: {accepted_total}; runs in the database: {runs}");
    anyhow::ensure!(
        usize::try_from(runs)? == accepted_total,
        "every accepted fire must have exactly one run"
    );
    cluster.print_memory();
    Ok(())
}

/// Runs written so far, and the transactions that wrote them (each run's `xmin`): an API writes
/// the acceptances that arrive together in one transaction.
async fn commits(cluster: &Cluster) -> anyhow::Result<(i64, i64)> {
    Ok(sqlx::query_as(
        "SELECT count(*), count(DISTINCT xmin::text) FROM routine_runs WHERE source = 'webhook'",
    )
    .fetch_one(&cluster.db.pool)
    .await?)
}

/// Creates a company, agent, project, routine and an HMAC webhook trigger through the API;
/// returns the fire path and the secret.
async fn webhook(api: &str) -> anyhow::Result<(String, String)> {
    let http = reqwest::Client::new();
    let post = |path: String, body: Value| {
        let http = http.clone();
        async move {
            let response = http
                .post(format!("{api}{path}"))
                .bearer_auth(BOARD)
                .json(&body)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "POST {path}: {}",
                response.status()
            );
            anyhow::Ok(response.json::<Value>().await?)
        }
    };
    let id = |v: &Value| v["id"].as_str().unwrap_or_default().to_owned();
    let company = id(&post("/api/companies".into(), json!({ "name": "bench" })).await?);
    let agent = post(
        format!("/api/companies/{company}/agents"),
        json!({ "name": "bench" }),
    )
    .await?;
    let agent = agent["agent"]["id"]
        .as_str()
        .map_or_else(|| id(&agent), str::to_owned);
    let project = id(&post(
        format!("/api/companies/{company}/projects"),
        json!({ "name": "bench" }),
    )
    .await?);
    let routine = id(&post(
        format!("/api/companies/{company}/routines"),
        json!({ "title": "ingest", "assigneeAgentId": agent, "projectId": project, "concurrencyPolicy": "always_enqueue" }),
    )
    .await?);
    let trigger = post(
        format!("/api/routines/{routine}/triggers"),
        json!({ "kind": "webhook", "signingMode": "hmac_sha256", "replayWindowSec": 300 }),
    )
    .await?;
    let url = trigger["secretMaterial"]["webhookUrl"]
        .as_str()
        .ok_or_else(|| anyhow::anyhow!("no webhook URL: {trigger}"))?;
    let path = format!("/api/{}", url.split("/api/").nth(1).unwrap_or_default());
    let secret = trigger["secretMaterial"]["webhookSecret"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    Ok((path, secret))
}

struct Fired {
    accepted: usize,
    rate: f64,
    p50: f64,
    p99: f64,
    errors: usize,
}

async fn fire(
    apis: &[String],
    path: &str,
    secret: &str,
    concurrency: usize,
    seconds: u64,
) -> Fired {
    let counter = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (counter, errors) = (Arc::clone(&counter), Arc::clone(&errors));
        let (apis, path, secret) = (apis.to_vec(), path.to_owned(), secret.to_owned());
        tasks.spawn(async move {
            let mut callers: Vec<Caller> = apis.iter().map(|api| Caller::new(api)).collect();
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let n = counter.fetch_add(1, Ordering::Relaxed);
                let body = format!("{{\"n\":{n}}}");
                let timestamp = chrono::Utc::now().timestamp_millis().to_string();
                let signature =
                    nexus_tests::webhook_signature(&secret, &timestamp, body.as_bytes());
                let sent = Instant::now();
                let caller = &mut callers[n % apis.len()];
                if caller.fire(&path, &timestamp, &signature, body).await {
                    latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                } else {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
            }
            latencies
        });
    }
    let mut latencies: Vec<f64> = tasks.join_all().await.into_iter().flatten().collect();
    let elapsed = started.elapsed().as_secs_f64();
    latencies.sort_by(f64::total_cmp);
    #[allow(clippy::cast_precision_loss)]
    Fired {
        accepted: latencies.len(),
        rate: latencies.len() as f64 / elapsed,
        p50: percentile(&latencies, 50.0),
        p99: percentile(&latencies, 99.0),
        errors: errors.load(Ordering::Relaxed),
    }
}

/// One caller's HTTP/1.1 connection to one API, kept across its calls and opened again after a
/// failure. The load generator shares a machine with what it measures, so it is kept lean: a
/// bare connection per caller, as `wrk` or `pgbench` keep, rather than a pooling client that
/// parses a URL and passes each call through its middleware (docs/benchmarks.md, § 2).
struct Caller {
    /// `host:port`.
    address: String,
    connection: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>>,
}

impl Caller {
    fn new(api: &str) -> Self {
        Self {
            address: api
                .trim_start_matches("http://")
                .trim_end_matches('/')
                .to_owned(),
            connection: None,
        }
    }

    /// Sends one signed fire; whether it was answered 202 (the answer read to its end).
    async fn fire(&mut self, path: &str, timestamp: &str, signature: &str, body: String) -> bool {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header("x-paperclip-timestamp", timestamp)
            .header("x-paperclip-signature", format!("sha256={signature}"))
            .body(Full::new(Bytes::from(body)));
        let Ok(request) = request else { return false };
        let Some(connection) = self.connection().await else {
            return false;
        };
        let answered = async {
            let response = connection.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            response.into_body().collect().await.ok()?;
            Some(status)
        };
        match answered.await {
            Some(status) => status == 202,
            None => {
                self.connection = None;
                false
            }
        }
    }

    /// The open connection, ready for a call; a new one when there is none.
    async fn connection(
        &mut self,
    ) -> Option<&mut hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
        if self.connection.is_none() {
            let stream = tokio::net::TcpStream::connect(&self.address).await.ok()?;
            stream.set_nodelay(true).ok()?;
            let (sender, connection) =
                hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                    .await
                    .ok()?;
            tokio::spawn(connection);
            self.connection = Some(sender);
        }
        let connection = self.connection.as_mut()?;
        if connection.ready().await.is_err() {
            self.connection = None;
            return None;
        }
        self.connection.as_mut()
    }
}

/// Transactions per second of `pgbench` inserting one row per transaction.
fn pgbench(cluster: &Cluster, concurrency: usize, seconds: u64) -> anyhow::Result<f64> {
    let script = std::env::temp_dir().join(format!("nexus-bench-{}.sql", std::process::id()));
    std::fs::write(
        &script,
        "INSERT INTO bench_ceiling (payload, created_at) VALUES ('{\"n\": 1}', now());\n",
    )?;
    let output = std::process::Command::new("pgbench")
        .arg("--no-vacuum")
        .args(["--client", &concurrency.to_string()])
        .args(["--jobs", "2"])
        .args(["--time", &seconds.to_string()])
        .arg("--file")
        .arg(&script)
        .arg(&cluster.db.url)
        .output();
    drop(std::fs::remove_file(&script));
    let output = output.map_err(|e| anyhow::anyhow!("pgbench is needed for the ceiling: {e}"))?;
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find(|l| l.starts_with("tps = "))
        .and_then(|l| l.split_whitespace().nth(2)?.parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!(
                "pgbench gave no tps: {text}{}",
                String::from_utf8_lossy(&output.stderr)
            )
        })
}
