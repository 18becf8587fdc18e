//! Webhook ingestion: signed fires, every one distinct (fresh timestamp, body and delivery id,
//! so the replay memory or the delivery id is written each time), to one `nexus-api` and to two
//! (round robin in the client), at fixed concurrency for a fixed time, in each signing mode
//! asked for (`--modes`, default `hmac_sha256`; `all` for every one). In the same run, the
//! Postgres ceiling for comparable work: `pgbench` inserting one row per transaction at the
//! same concurrency.

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

/// Every signing mode, in the order `--modes all` measures them.
const MODES: [&str; 6] = [
    "bearer",
    "hmac_sha256",
    "standard_webhooks",
    "github",
    "stripe",
    "slack",
];

/// What a run measures.
pub(crate) struct Shape<'a> {
    pub(crate) concurrencies: &'a [usize],
    pub(crate) seconds: u64,
    /// Signing modes (`all` for every one).
    pub(crate) modes: &'a str,
    /// How many API processes to fire at: 1, 2, or both in turn.
    pub(crate) apis: &'a [usize],
    /// Also measure, in the modes with a delivery id, a sender retrying deliveries already
    /// accepted (1,000 ids, each fired again and again).
    pub(crate) repeats: bool,
}

pub(crate) async fn run(shape: Shape<'_>) -> anyhow::Result<()> {
    let Shape {
        concurrencies,
        seconds,
        modes,
        apis: api_counts,
        repeats,
    } = shape;
    let modes: Vec<&str> = if modes == "all" {
        MODES.to_vec()
    } else {
        modes.split(',').map(str::trim).collect()
    };
    if let Some(unknown) = modes.iter().find(|m| !MODES.contains(m)) {
        anyhow::bail!("unknown signing mode {unknown}: one of {MODES:?} or all");
    }
    anyhow::ensure!(
        api_counts.iter().all(|n| (1..=2).contains(n)),
        "--apis takes 1 and 2"
    );
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
    println!(
        "webhook ingestion: signed fires, each distinct, {seconds} s per row; no worker runs (ingestion only)"
    );
    println!(
        "Postgres ceiling: pgbench, one single-row INSERT + COMMIT per transaction, same concurrency\n"
    );
    println!(
        "{:>25} {:>11} {:>9} {:>12} {:>9} {:>9} {:>8} {:>14} {:>8} {:>12} {:>34}",
        "mode",
        "concurrency",
        "apis",
        "answered/s",
        "p50 ms",
        "p99 ms",
        "errors",
        "pg ceiling/s",
        "ratio",
        "runs/commit",
        "cpu µs/fire pg/api/redis/client/all"
    );
    let mut accepted_total = 0;
    let with_ids = ["standard_webhooks", "github", "stripe"];
    let rows = modes.iter().flat_map(|&mode| {
        let again = (repeats && with_ids.contains(&mode)).then_some(1000);
        std::iter::once((mode, None)).chain(again.map(|pool| (mode, Some(pool))))
    });
    for (mode, repeat) in rows {
        let (path, secret) = webhook(&first, mode).await?;
        let target = Target {
            mode,
            path: &path,
            secret: &secret,
            repeat,
        };
        let label = if repeat.is_some() {
            format!("{mode} repeats")
        } else {
            mode.to_owned()
        };
        for (&concurrency, &ceiling) in concurrencies.iter().zip(&ceilings) {
            for &count in api_counts {
                let apis = [first.clone(), second.clone()][..count].to_vec();
                let before = commits(&cluster).await?;
                let cpu = CpuReading::now();
                let result = fire(&apis, &target, concurrency, seconds).await;
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
                    "{label:>25} {concurrency:>11} {:>9} {:>12.0} {:>9.2} {:>9.2} {:>8} {ceiling:>14.0} {:>7.0}% {per_commit:>12.1} {:>34}",
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
    }
    let runs: i64 = sqlx::query_scalar("SELECT count(*) FROM routine_runs")
        .fetch_one(&cluster.db.pool)
        .await?;
    println!("\nfires answered with a new run: {accepted_total}; runs in the database: {runs}");
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

/// Creates a company, agent, project, routine and a webhook trigger signing in `mode` through
/// the API; returns the fire path and the secret.
async fn webhook(api: &str, mode: &str) -> anyhow::Result<(String, String)> {
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
    let mut body = json!({ "kind": "webhook", "signingMode": mode, "replayWindowSec": 300 });
    if matches!(mode, "stripe" | "slack") {
        body["webhookSecret"] = json!("whsec_bench_secret_issued_by_the_sender");
    }
    let trigger = post(format!("/api/routines/{routine}/triggers"), body).await?;
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

/// Where fires go and how they are signed.
struct Target<'a> {
    mode: &'a str,
    path: &'a str,
    secret: &'a str,
    /// `Some(n)`: the fires cycle over `n` delivery ids, so after the first `n` every fire is
    /// a sender's retry of a delivery already accepted (answered with its run).
    repeat: Option<usize>,
}

async fn fire(apis: &[String], target: &Target<'_>, concurrency: usize, seconds: u64) -> Fired {
    // Fire numbers (and so delivery ids) never repeat within a run: a repeated delivery id
    // would be answered with the first fire's run, not measured as a new one.
    static FIRED: AtomicUsize = AtomicUsize::new(0);
    let base = FIRED.fetch_add(1 << 32, Ordering::Relaxed);
    let counter = Arc::new(AtomicUsize::new(base));
    let repeat = target.repeat;
    let errors = Arc::new(AtomicUsize::new(0));
    let new_runs = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (counter, errors, new_runs) = (
            Arc::clone(&counter),
            Arc::clone(&errors),
            Arc::clone(&new_runs),
        );
        let (apis, path, secret, mode) = (
            apis.to_vec(),
            target.path.to_owned(),
            target.secret.to_owned(),
            target.mode.to_owned(),
        );
        tasks.spawn(async move {
            let mut callers: Vec<Caller> = apis.iter().map(|api| Caller::new(api)).collect();
            let mut latencies = Vec::new();
            while Instant::now() < until {
                let n = match repeat {
                    None => counter.fetch_add(1, Ordering::Relaxed),
                    Some(pool) => base + (counter.fetch_add(1, Ordering::Relaxed) - base) % pool,
                };
                // A Stripe event carries its id in the body; every mode gets the same body.
                let body = format!("{{\"id\":\"evt_{n}\",\"type\":\"bench\",\"n\":{n}}}");
                // Signed as the mode's sender signs, each fire its own delivery id.
                let headers = nexus_tests::signed_as(
                    &mode,
                    &secret,
                    &format!("d-{n}"),
                    chrono::Utc::now().timestamp(),
                    body.as_bytes(),
                );
                let sent = Instant::now();
                let caller = &mut callers[n % apis.len()];
                match caller.fire(&path, headers, body).await {
                    Some(replayed) => {
                        latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
                        if !replayed {
                            new_runs.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    None => {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
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
        accepted: new_runs.load(Ordering::Relaxed),
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

    /// Sends one signed fire; `Some(replayed)` when it was answered 202 (the answer read to
    /// its end), `replayed` when the answer is a delivery's earlier run.
    async fn fire(
        &mut self,
        path: &str,
        headers: Vec<(&'static str, String)>,
        body: String,
    ) -> Option<bool> {
        let mut request = hyper::Request::post(path)
            .header(hyper::header::HOST, &self.address)
            .header(hyper::header::CONTENT_TYPE, "application/json");
        for (name, value) in headers {
            request = request.header(name, value);
        }
        let request = request.body(Full::new(Bytes::from(body)));
        let Ok(request) = request else { return None };
        let connection = self.connection().await?;
        let answered = async {
            let response = connection.send_request(request).await.ok()?;
            let status = response.status().as_u16();
            let replayed = response.headers().contains_key("idempotent-replayed");
            response.into_body().collect().await.ok()?;
            Some((status, replayed))
        };
        match answered.await {
            Some((status, replayed)) => (status == 202).then_some(replayed),
            None => {
                self.connection = None;
                None
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
