//! End to end with the real binaries as separate processes: two `nexus-api`, two
//! `nexus-scheduler` and two `nexus-worker` on one Postgres and one Redis (reached through a
//! proxy the test can cut). Schedules, webhooks and manual runs must each produce exactly one
//! run, and each dispatched run exactly one issue, while the test
//! - SIGKILLs the scheduler leader shortly before a minute boundary,
//! - SIGKILLs a worker in the middle of a burst of runs,
//! - drops every Postgres connection (`pg_terminate_backend`) during load,
//! - cuts Redis across a minute boundary (manual runs are still accepted; the missed fire is
//!   recorded under the catch-up policy when Redis returns).
//!
//! A second run (two APIs, a scheduler, a worker; Postgres reached through a proxy) SIGKILLs an
//! API replica in the middle of a burst of keyed runs and then cuts Postgres for 8 s across a
//! minute boundary: every 202 has its run, nothing refused or unanswered has one until the
//! sender retries it with its key, and then exactly one; the boundary's fire happens once.
//!
//! The other roles' binaries are found next to `nexus-api`: `cargo test` builds the binaries
//! of every package with integration tests (the scheduler and worker crates have theirs).

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Timelike as _, Utc};
use nexus_tests::{Proxy, TestDb, eventually, redis_url};
use serde_json::{Value, json};

const BOARD: &str = "e2e-board-token-0123456789abcdef";

struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn binary(name: &str) -> PathBuf {
    let path = PathBuf::from(env!("CARGO_BIN_EXE_nexus-api")).with_file_name(name);
    assert!(
        path.exists(),
        "{} is not built (run the workspace's tests with `cargo test --workspace`)",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .expect("port")
        .local_addr()
        .expect("addr")
        .port()
}

struct Cluster {
    db: TestDb,
    /// What the processes use as `NEXUS_DATABASE_URL`: the database, or a proxy to it.
    database_url: String,
    key: String,
    prefix: String,
    redis: Proxy,
    processes: HashMap<String, Process>,
    apis: Vec<String>,
    http: reqwest::Client,
    turn: std::sync::atomic::AtomicUsize,
}

/// A company's agent and project, as the cluster's API created them.
struct Team {
    company: String,
    agent: String,
    project: String,
}

impl Cluster {
    /// A new database and Redis prefix; the processes reach Postgres through a proxy when
    /// `proxied` (the test can then cut it). Nothing runs yet.
    async fn new(proxied: bool) -> (Self, Option<Proxy>) {
        let db = TestDb::create().await;
        let proxy = if proxied {
            Some(Proxy::postgres(&db.url, true).await)
        } else {
            None
        };
        let cluster = Self {
            database_url: proxy
                .as_ref()
                .map_or_else(|| db.url.clone(), |p| p.url.clone()),
            db,
            key: nexus_shared::crypto::SecretKey::generate().to_base64(),
            prefix: format!("nexus-test:{}", uuid::Uuid::new_v4().simple()),
            redis: Proxy::redis(true).await,
            processes: HashMap::new(),
            apis: Vec::new(),
            http: nexus_tests::http_client(),
            turn: std::sync::atomic::AtomicUsize::new(0),
        };
        (cluster, proxy)
    }

    /// Starts `apis` API replicas and the named schedulers and workers; waits for the APIs.
    async fn launch(&mut self, apis: usize, others: &[(&str, &str)]) {
        self.apis = (1..=apis)
            .map(|n| self.start(&format!("api-{n}"), "nexus-api"))
            .collect();
        for (name, binary_name) in others {
            self.start(name, binary_name);
        }
        for api in &self.apis {
            nexus_tests::wait_until_ready(api, 30).await;
        }
    }

    /// A company with an agent and a project.
    async fn team(&self) -> Team {
        let (_, company) = self
            .post("/api/companies", &json!({ "name": "Acme" }))
            .await;
        let company = company["id"].as_str().expect("company").to_owned();
        let (_, agent) = self
            .post(
                &format!("/api/companies/{company}/agents"),
                &json!({ "name": "Ada" }),
            )
            .await;
        let (_, project) = self
            .post(
                &format!("/api/companies/{company}/projects"),
                &json!({ "name": "Ops" }),
            )
            .await;
        Team {
            company,
            agent: agent["agent"]["id"].as_str().expect("agent").to_owned(),
            project: project["id"].as_str().expect("project").to_owned(),
        }
    }

    /// An `always_enqueue` routine of `team`, with `trigger` when one is given; returns the
    /// routine's id and the trigger's creation answer.
    async fn routine(&self, team: &Team, title: &str, trigger: Option<Value>) -> (String, Value) {
        let (status, routine) = self
            .post(
                &format!("/api/companies/{}/routines", team.company),
                &json!({ "title": title, "assigneeAgentId": team.agent, "projectId": team.project,
                         "concurrencyPolicy": "always_enqueue" }),
            )
            .await;
        assert_eq!(status, 201, "{routine}");
        let id = routine["id"].as_str().expect("routine").to_owned();
        let Some(trigger) = trigger else {
            return (id, Value::Null);
        };
        let (status, created) = self
            .post(&format!("/api/routines/{id}/triggers"), &trigger)
            .await;
        assert_eq!(status, 201, "{created}");
        (id, created)
    }

    fn start(&mut self, name: &str, binary_name: &str) -> String {
        let port = free_port();
        let child = Command::new(binary(binary_name))
            .env_clear()
            .env("NEXUS_DATABASE_URL", &self.database_url)
            .env("NEXUS_REDIS_URL", &self.redis.url)
            .env("NEXUS_REDIS_PREFIX", &self.prefix)
            .env("NEXUS_SECRET_KEY", &self.key)
            .env("NEXUS_LISTEN", format!("127.0.0.1:{port}"))
            .env("NEXUS_BOOTSTRAP_BOARD_TOKEN", BOARD)
            .env("NEXUS_LEADER_TTL_SECS", "3")
            .env("NEXUS_JOB_LEASE_SECS", "5")
            .env("NEXUS_MISFIRE_GRACE_SECS", "15")
            .env("NEXUS_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{binary_name} starts: {e}"));
        self.processes.insert(name.to_owned(), Process(child));
        format!("http://127.0.0.1:{port}")
    }

    fn kill(&mut self, name: &str) {
        let mut process = self.processes.remove(name).expect("running");
        process.0.kill().expect("SIGKILL");
        drop(process.0.wait());
    }

    /// The next API replica, round robin, as a load balancer would pick.
    fn api(&self) -> &str {
        let n = self.turn.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        &self.apis[n % self.apis.len()]
    }

    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_to(self.api(), path, body).await
    }

    /// Posts to one API replica; status 0 when no answer came.
    async fn post_to(&self, api: &str, path: &str, body: &Value) -> (u16, Value) {
        let response = self
            .http
            .post(format!("{api}{path}"))
            .bearer_auth(BOARD)
            .json(body)
            .send()
            .await;
        match response {
            Ok(r) => (r.status().as_u16(), r.json().await.unwrap_or(Value::Null)),
            Err(_) => (0, Value::Null),
        }
    }

    async fn scalar(&self, sql: &'static str) -> i64 {
        sqlx::query_scalar(sql)
            .fetch_one(&self.db.pool)
            .await
            .expect("query")
    }

    /// How many runs have an issue, after checking that none has two.
    async fn runs_with_one_issue(&self) -> usize {
        let issues: Vec<(String, i64)> = sqlx::query_as(
            "SELECT origin_run_id::text, count(*) FROM issues GROUP BY origin_run_id",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("issues");
        assert!(issues.iter().all(|(_, n)| *n == 1), "a run with two issues");
        issues.len()
    }

    async fn leader(&self) -> Option<String> {
        let client = redis::Client::open(redis_url()).ok()?;
        let mut conn = client.get_multiplexed_async_connection().await.ok()?;
        redis::cmd("GET")
            .arg(format!("{}:scheduler:leader", self.prefix))
            .query_async(&mut conn)
            .await
            .ok()
            .flatten()
    }

    /// Waits (up to 180 s) until every accepted run has left `received` and no job is queued
    /// or running; otherwise fails showing what is left, with the database's open transactions.
    async fn settled(&self, what: &str) {
        let settled = nexus_tests::within(180, || async {
            let waiting = self
                .scalar("SELECT count(*) FROM routine_runs WHERE status = 'received'")
                .await;
            let running = self
                .scalar("SELECT count(*) FROM jobs WHERE state IN ('running', 'queued')")
                .await;
            (waiting == 0 && running == 0).then_some(())
        })
        .await;
        if settled.is_some() {
            return;
        }
        let jobs: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' ', state, 'attempt', attempts, lease_owner, 'due in', run_at - now(), last_error)
             FROM jobs WHERE state IN ('running', 'queued') LIMIT 20",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("jobs");
        let open: Vec<String> = sqlx::query_scalar(
            "SELECT concat_ws(' ', state, wait_event_type, now() - xact_start, left(query, 120))
             FROM pg_stat_activity
             WHERE datname = current_database() AND xact_start IS NOT NULL",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("activity");
        panic!("timed out waiting for {what}: jobs left {jobs:?}; open transactions {open:?}");
    }
}

/// Waits (bounded) until the wall clock's second is within `from..=to`, in the current minute
/// or the next one: the faults are aimed at minute boundaries.
async fn until_second(from: u32, to: u32) {
    eventually(70, "the wall clock", || async {
        (from..=to).contains(&Utc::now().second()).then_some(())
    })
    .await;
}

#[path = "e2e/outages.rs"]
mod outages;
#[path = "e2e/replicas.rs"]
mod replicas;
