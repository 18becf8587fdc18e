//! The embedded backend against Postgres, in the same run and the same way: one `nexus serve`
//! process without Redis, on a fresh embedded database (no `NEXUS_DATABASE_URL`: SQLite in a
//! new data directory) or on a fresh Postgres database. Everything is set up through the HTTP
//! API, so both backends do exactly the same work:
//!
//! - minute burst: R `always_enqueue` routines created paused with a `* * * * *` trigger, then
//!   resumed together (one bulk request) shortly after a minute starts; heartbeat lateness
//!   (heartbeat run created − boundary) at the next boundaries;
//! - manual run → heartbeat run: N runs by hand at 10 a second; the heartbeat run's creation
//!   less the run's acceptance, both stamped by the server;
//! - webhook ingestion: one `bearer` trigger, C concurrent callers for S seconds; accepted
//!   fires a second, and one run per 202.
//!
//! The figures are read from the database once the process has stopped (SQLite through a
//! read-only connection to its file).

use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use serde_json::{Value, json};
use sqlx::{PgPool, SqlitePool, sqlite::SqliteConnectOptions};

use crate::cluster::{BOARD, binary, free_port};

/// The benchmark's shape.
pub(crate) struct Shape {
    pub(crate) routines: Vec<usize>,
    pub(crate) boundaries: usize,
    pub(crate) runs: usize,
    pub(crate) concurrency: Vec<usize>,
    pub(crate) seconds: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Backend {
    Postgres,
    Embedded,
}

impl Backend {
    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgres",
            Self::Embedded => "embedded",
        }
    }
}

/// One `nexus serve` on a fresh database of `backend`.
struct Server {
    api: Api,
    child: Child,
    data_dir: PathBuf,
    pg: Option<nexus_tests::TestDb>,
}

/// Requests to a server, as the board.
#[derive(Clone)]
struct Api {
    url: String,
    http: reqwest::Client,
}

impl Drop for Server {
    fn drop(&mut self) {
        drop(self.child.kill());
        drop(self.child.wait());
        drop(std::fs::remove_dir_all(&self.data_dir));
    }
}

/// The database of a stopped server, read.
enum Reader {
    Postgres(PgPool),
    Embedded(SqlitePool),
}

impl Server {
    async fn start(backend: Backend) -> anyhow::Result<Self> {
        let port = free_port()?;
        let data_dir =
            std::env::temp_dir().join(format!("nexus-bench-{}", uuid::Uuid::new_v4().simple()));
        let mut command = Command::new(binary("nexus")?);
        command
            .arg("serve")
            .env_clear()
            .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("NEXUS_DATA_DIR", &data_dir)
            .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", BOARD)
            .env("NEXUS_SECRET_KEY", {
                use base64::Engine as _;
                let key: [u8; 32] = nexus_shared::crypto::random_bytes();
                base64::engine::general_purpose::STANDARD.encode(key)
            })
            .env("NEXUS_WORKER_CONCURRENCY", "2")
            .env("NEXUS_WORKER_BATCH", "500")
            .env("NEXUS_WEBHOOK_RATE_PER_SEC", "1000000")
            .env("NEXUS_WEBHOOK_BURST", "1000000")
            .env("NEXUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        let pg = match backend {
            Backend::Postgres => {
                let db = nexus_tests::TestDb::create().await;
                command.env("NEXUS_DATABASE_URL", &db.url);
                Some(db)
            }
            Backend::Embedded => None,
        };
        let child = command.spawn()?;
        let server = Self {
            api: Api {
                url: format!("http://127.0.0.1:{port}"),
                http: reqwest::Client::new(),
            },
            child,
            data_dir,
            pg,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(response) = server
                .api
                .http
                .get(format!("{}/readyz", server.api.url))
                .send()
                .await
                && response.status().is_success()
            {
                return Ok(server);
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "nexus serve did not become ready"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Stops the process and opens its database for reading.
    async fn stop(&mut self) -> anyhow::Result<Reader> {
        drop(self.child.kill());
        drop(self.child.wait());
        Ok(match &self.pg {
            Some(db) => Reader::Postgres(db.pool.clone()),
            None => Reader::Embedded(
                SqlitePool::connect_with(
                    SqliteConnectOptions::new()
                        .filename(self.data_dir.join("nexus.db"))
                        .read_only(true),
                )
                .await?,
            ),
        })
    }
}

impl Api {
    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        let response = self
            .http
            .post(format!("{}{path}", self.url))
            .bearer_auth(BOARD)
            .json(body)
            .send()
            .await?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        anyhow::ensure!(status.is_success(), "{path}: {status} {body}");
        Ok(body)
    }

    /// A company, a (polling) agent and a project; returns `(company, agent, project)`.
    async fn team(&self) -> anyhow::Result<(String, String, String)> {
        let id = |v: &Value, p: &str| v.pointer(p).and_then(Value::as_str).map(str::to_owned);
        let company = self
            .post("/api/companies", &json!({ "name": "bench" }))
            .await?;
        let company = id(&company, "/id").ok_or_else(|| anyhow::anyhow!("company id"))?;
        let agent = self
            .post(
                &format!("/api/companies/{company}/agents"),
                &json!({ "name": "bench" }),
            )
            .await?;
        let agent = id(&agent, "/agent/id").ok_or_else(|| anyhow::anyhow!("agent id"))?;
        let project = self
            .post(
                &format!("/api/companies/{company}/projects"),
                &json!({ "name": "bench" }),
            )
            .await?;
        let project = id(&project, "/id").ok_or_else(|| anyhow::anyhow!("project id"))?;
        Ok((company, agent, project))
    }

    async fn routine(
        &self,
        team: &(String, String, String),
        paused: bool,
    ) -> anyhow::Result<String> {
        let (company, agent, project) = team;
        let routine = self
            .post(
                &format!("/api/companies/{company}/routines"),
                &json!({
                    "title": "bench", "assigneeAgentId": agent, "projectId": project,
                    "concurrencyPolicy": "always_enqueue",
                    "status": if paused { "paused" } else { "active" },
                }),
            )
            .await?;
        routine
            .get("id")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .ok_or_else(|| anyhow::anyhow!("routine id"))
    }
}

impl Reader {
    /// Heartbeat run creation less `from` (or each run's acceptance, when `None`), seconds,
    /// for the runs of `scheduled_for` (or of every run, when `None`).
    async fn latencies(&self, scheduled_for: Option<DateTime<Utc>>) -> anyhow::Result<Vec<f64>> {
        let pairs: Vec<(DateTime<Utc>, DateTime<Utc>)> = match (self, scheduled_for) {
            (Self::Postgres(pool), Some(at)) => {
                sqlx::query_as(
                    "SELECT r.scheduled_for, h.created_at FROM routine_runs r
                 JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id WHERE r.scheduled_for = $1",
                )
                .bind(at)
                .fetch_all(pool)
                .await?
            }
            (Self::Postgres(pool), None) => {
                sqlx::query_as(
                    "SELECT r.triggered_at, h.created_at FROM routine_runs r
                 JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id",
                )
                .fetch_all(pool)
                .await?
            }
            (Self::Embedded(pool), Some(at)) => {
                sqlx::query_as(
                    "SELECT r.scheduled_for, h.created_at FROM routine_runs r
                 JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id WHERE r.scheduled_for = ?1",
                )
                .bind(at)
                .fetch_all(pool)
                .await?
            }
            (Self::Embedded(pool), None) => {
                sqlx::query_as(
                    "SELECT r.triggered_at, h.created_at FROM routine_runs r
                 JOIN heartbeat_runs h ON h.id = r.heartbeat_run_id",
                )
                .fetch_all(pool)
                .await?
            }
        };
        Ok(pairs
            .into_iter()
            .map(|(from, to)| (to - from).as_seconds_f64())
            .collect())
    }

    async fn runs(&self) -> anyhow::Result<i64> {
        Ok(match self {
            Self::Postgres(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM routine_runs")
                    .fetch_one(pool)
                    .await?
            }
            Self::Embedded(pool) => {
                sqlx::query_scalar("SELECT count(*) FROM routine_runs")
                    .fetch_one(pool)
                    .await?
            }
        })
    }
}

/// `(p50, p99, max)` of `values`, which it sorts.
fn spread(values: &mut [f64]) -> (f64, f64, f64) {
    if values.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    values.sort_by(f64::total_cmp);
    let at = |q: f64| {
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss
        )]
        let i = ((values.len() - 1) as f64 * q).round() as usize;
        values[i]
    };
    (at(0.5), at(0.99), at(1.0))
}

pub(crate) async fn run(shape: Shape) -> anyhow::Result<()> {
    let backends = [Backend::Postgres, Backend::Embedded];
    println!(
        "embedded backend against Postgres: one `nexus serve` without Redis each, worker concurrency 2, batch 500\n"
    );
    println!("minute burst (heartbeat lateness, s)");
    println!(
        "{:<9} {:>8} {:>9} {:>8} {:>8} {:>26} {:>10}",
        "backend", "routines", "boundary", "runs", "hb runs", "p50/p99/max", "set-up s"
    );
    for &routines in &shape.routines {
        for backend in backends {
            burst(
                backend,
                routines.clamp(1, 20_000),
                shape.boundaries.clamp(1, 3),
            )
            .await?;
        }
    }
    println!(
        "\nmanual run → heartbeat run ({} runs at 10/s, ms)",
        shape.runs
    );
    println!("{:<9} {:>26}", "backend", "p50/p99/max");
    for backend in backends {
        manual(backend, shape.runs.clamp(1, 3_000)).await?;
    }
    println!(
        "\nwebhook ingestion (`bearer`, {} s per level)",
        shape.seconds
    );
    println!(
        "{:<9} {:>11} {:>12} {:>9} {:>9}",
        "backend", "concurrent", "accepted/s", "errors", "runs ok"
    );
    for &concurrency in &shape.concurrency {
        for backend in backends {
            ingest(
                backend,
                concurrency.clamp(1, 256),
                shape.seconds.clamp(1, 60),
            )
            .await?;
        }
    }
    Ok(())
}

async fn burst(backend: Backend, routines: usize, boundaries: usize) -> anyhow::Result<()> {
    let mut server = Server::start(backend).await?;
    let started = Instant::now();
    let team = server.api.team().await?;
    // Created paused, 8 at a time.
    let per_task = routines.div_ceil(8);
    let creators: Vec<_> = (0..8)
        .map(|t| {
            let (api, team) = (server.api.clone(), team.clone());
            tokio::spawn(async move {
                for _ in (t * per_task)..((t + 1) * per_task).min(routines) {
                    let routine = api.routine(&team, true).await?;
                    api.post(
                        &format!("/api/routines/{routine}/triggers"),
                        &json!({ "kind": "schedule", "cronExpression": "* * * * *", "timezone": "UTC" }),
                    )
                    .await?;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for creator in creators {
        creator.await??;
    }
    let setup = started.elapsed().as_secs_f64();
    // Resume them all a few seconds into a minute; the next boundary is the first measured.
    let now = Utc::now();
    let minute = now.duration_trunc(TimeDelta::minutes(1))?;
    let resume_at = if now - minute > TimeDelta::seconds(30) {
        minute + TimeDelta::seconds(62)
    } else {
        now
    };
    tokio::time::sleep((resume_at - Utc::now()).to_std().unwrap_or_default()).await;
    server
        .api
        .post(
            &format!("/api/companies/{}/routines/resume", team.0),
            &json!({ "assigneeAgentId": team.1 }),
        )
        .await?;
    let first = Utc::now().duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    let last = first + TimeDelta::minutes(i64::try_from(boundaries)? - 1);
    // Until the last boundary's heartbeat runs exist, or 60 s after it.
    let expected = routines * boundaries;
    let deadline = last + TimeDelta::seconds(60);
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        if Utc::now() > deadline
            || (Utc::now() > last && heartbeats_created(&server.api).await? >= expected)
        {
            break;
        }
    }
    let reader = server.stop().await?;
    for n in 0..boundaries {
        let boundary = first + TimeDelta::minutes(i64::try_from(n)?);
        let mut late = reader.latencies(Some(boundary)).await?;
        let heartbeats = late.len();
        let (p50, p99, max) = spread(&mut late);
        println!(
            "{:<9} {:>8} {:>9} {:>8} {:>8} {:>26} {:>10.0}",
            backend.name(),
            routines,
            boundary.format("%H:%M"),
            routines,
            heartbeats,
            format!("{p50:.3}/{p99:.3}/{max:.3}"),
            setup
        );
    }
    Ok(())
}

/// Heartbeat runs created since the process started (its `nexus_heartbeat_runs_total` of
/// `queued`): counted without loading the database being measured.
async fn heartbeats_created(api: &Api) -> anyhow::Result<usize> {
    let metrics = api
        .http
        .get(format!("{}/metrics", api.url))
        .send()
        .await?
        .text()
        .await?;
    let queued: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("nexus_heartbeat_runs_total{") && l.contains("status=\"queued\""))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    Ok(queued as usize)
}

async fn manual(backend: Backend, runs: usize) -> anyhow::Result<()> {
    let mut server = Server::start(backend).await?;
    let team = server.api.team().await?;
    let routine = server.api.routine(&team, false).await?;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    for _ in 0..runs {
        tick.tick().await;
        server
            .api
            .post(&format!("/api/routines/{routine}/run"), &json!({}))
            .await?;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reader = server.stop().await?;
    let mut late: Vec<f64> = reader
        .latencies(None)
        .await?
        .into_iter()
        .map(|s| s * 1e3)
        .collect();
    let done = late.len();
    let (p50, p99, max) = spread(&mut late);
    println!(
        "{:<9} {:>26}   ({done} of {runs} heartbeat runs)",
        backend.name(),
        format!("{p50:.1}/{p99:.1}/{max:.1}")
    );
    Ok(())
}

async fn ingest(backend: Backend, concurrency: usize, seconds: u64) -> anyhow::Result<()> {
    let mut server = Server::start(backend).await?;
    let team = server.api.team().await?;
    let routine = server.api.routine(&team, false).await?;
    let trigger = server
        .api
        .post(
            &format!("/api/routines/{routine}/triggers"),
            &json!({ "kind": "webhook", "signingMode": "bearer" }),
        )
        .await?;
    let url = trigger
        .pointer("/secretMaterial/webhookUrl")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("webhook url"))?
        .to_owned();
    let secret = trigger
        .pointer("/secretMaterial/webhookSecret")
        .and_then(Value::as_str)
        .ok_or_else(|| anyhow::anyhow!("webhook secret"))?
        .to_owned();
    let accepted = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let until = Instant::now() + Duration::from_secs(seconds);
    let callers = (0..concurrency).map(|_| {
        let (http, url, secret) = (server.api.http.clone(), url.clone(), secret.clone());
        let (accepted, errors) = (Arc::clone(&accepted), Arc::clone(&errors));
        tokio::spawn(async move {
            while Instant::now() < until {
                let sent = http
                    .post(&url)
                    .bearer_auth(&secret)
                    .header("content-type", "application/json")
                    .body("{\"event\":\"bench\"}")
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status().as_u16() == 202 => accepted.fetch_add(1, Ordering::Relaxed),
                    _ => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        })
    });
    let handles: Vec<_> = callers.collect();
    for handle in handles {
        handle.await?;
    }
    let accepted = accepted.load(Ordering::Relaxed);
    let reader = server.stop().await?;
    let runs = reader.runs().await?;
    #[allow(clippy::cast_precision_loss)]
    let rate = accepted as f64 / seconds as f64;
    println!(
        "{:<9} {:>11} {:>12.0} {:>9} {:>9}",
        backend.name(),
        concurrency,
        rate,
        errors.load(Ordering::Relaxed),
        if u64::try_from(runs).ok() == Some(accepted) {
            "yes"
        } else {
            "NO"
        }
    );
    Ok(())
}
