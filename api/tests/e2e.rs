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
//! The other roles' binaries are found next to `nexus-api`: `cargo test` builds the binaries
//! of every package with integration tests (the scheduler and worker crates have theirs).

use std::{
    collections::{BTreeSet, HashMap},
    path::PathBuf,
    process::{Child, Command, Stdio},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Timelike as _, Utc};
use nexus_tests::{RedisProxy, TestDb, eventually, redis_url};
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
    key: String,
    prefix: String,
    redis: RedisProxy,
    processes: HashMap<String, Process>,
    apis: Vec<String>,
    http: reqwest::Client,
    turn: std::sync::atomic::AtomicUsize,
}

impl Cluster {
    fn start(&mut self, name: &str, binary_name: &str) -> String {
        let port = free_port();
        let child = Command::new(binary(binary_name))
            .env_clear()
            .env("NEXUS_DATABASE_URL", &self.db.url)
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
        let response = self
            .http
            .post(format!("{}{path}", self.api()))
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

#[tokio::test]
async fn the_distributed_system_fires_exactly_once_through_crashes_and_outages() {
    nexus_tests::needs_servers!();
    let mut cluster = Cluster {
        db: TestDb::create().await,
        key: nexus_shared::crypto::SecretKey::generate().to_base64(),
        prefix: format!("nexus-test:{}", uuid::Uuid::new_v4().simple()),
        redis: RedisProxy::start(true).await,
        processes: HashMap::new(),
        apis: Vec::new(),
        http: nexus_tests::http_client(),
        turn: std::sync::atomic::AtomicUsize::new(0),
    };
    let api_1 = cluster.start("api-1", "nexus-api");
    let api_2 = cluster.start("api-2", "nexus-api");
    cluster.apis = vec![api_1, api_2];
    for name in ["scheduler-1", "scheduler-2"] {
        cluster.start(name, "nexus-scheduler");
    }
    for name in ["worker-1", "worker-2"] {
        cluster.start(name, "nexus-worker");
    }
    for api in &cluster.apis {
        nexus_tests::wait_until_ready(api, 30).await;
    }

    // A company with a minutely schedule, a webhook and a routine for manual runs.
    let (_, company) = cluster
        .post("/api/companies", &json!({ "name": "Acme" }))
        .await;
    let company = company["id"].as_str().expect("company").to_owned();
    let (_, agent) = cluster
        .post(
            &format!("/api/companies/{company}/agents"),
            &json!({ "name": "Ada" }),
        )
        .await;
    let (_, project) = cluster
        .post(
            &format!("/api/companies/{company}/projects"),
            &json!({ "name": "Ops" }),
        )
        .await;
    let routine = |title: &str| {
        json!({ "title": title, "assigneeAgentId": agent["agent"]["id"], "projectId": project["id"],
                "concurrencyPolicy": "always_enqueue" })
    };
    let (_, minutely) = cluster
        .post(
            &format!("/api/companies/{company}/routines"),
            &routine("minutely"),
        )
        .await;
    let minutely = minutely["id"].as_str().expect("routine").to_owned();
    let (status, schedule) = cluster
        .post(
            &format!("/api/routines/{minutely}/triggers"),
            &json!({ "kind": "schedule", "cronExpression": "* * * * *" }),
        )
        .await;
    assert_eq!(status, 201, "{schedule}");
    let (_, manual) = cluster
        .post(
            &format!("/api/companies/{company}/routines"),
            &routine("manual"),
        )
        .await;
    let manual = manual["id"].as_str().expect("routine").to_owned();
    let (_, hooked) = cluster
        .post(
            &format!("/api/companies/{company}/routines"),
            &routine("hooked"),
        )
        .await;
    let hooked = hooked["id"].as_str().expect("routine").to_owned();
    let (_, webhook) = cluster
        .post(
            &format!("/api/routines/{hooked}/triggers"),
            &json!({ "kind": "webhook" }),
        )
        .await;
    let webhook_secret = webhook["secretMaterial"]["webhookSecret"]
        .as_str()
        .expect("secret")
        .to_owned();
    let public_id = webhook["trigger"]["publicId"]
        .as_str()
        .expect("public id")
        .to_owned();
    let mut accepted: BTreeSet<String> = BTreeSet::new();

    // 1. SIGKILL the scheduler leader a few seconds before a minute boundary.
    let leader = eventually(20, "a scheduler leader", || cluster.leader()).await;
    let leader_pid: u32 = leader
        .split(':')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("pid");
    until_second(54, 57).await;
    let boundary = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute")
        + TimeDelta::minutes(1);
    let name = cluster
        .processes
        .iter()
        .find(|(_, p)| p.0.id() == leader_pid)
        .map(|(n, _)| n.clone())
        .expect("the leader is one of ours");
    cluster.kill(&name);
    eventually(90, "the fire after the kill", || async {
        let fires: i64 =
            sqlx::query_scalar("SELECT count(*) FROM routine_runs WHERE scheduled_for = $1")
                .bind(boundary)
                .fetch_one(&cluster.db.pool)
                .await
                .ok()?;
        (fires >= 1).then_some(())
    })
    .await;
    cluster.start(&name, "nexus-scheduler");

    // 2. A burst of manual runs and webhook calls; SIGKILL a worker in the middle of it.
    for n in 0..150 {
        let (status, run) = cluster
            .post(
                &format!("/api/routines/{manual}/run"),
                &json!({ "payload": { "n": n } }),
            )
            .await;
        assert_eq!(status, 202, "{run}");
        accepted.insert(run["id"].as_str().expect("id").to_owned());
        if n % 3 == 0 {
            let url = format!(
                "{}/api/routine-triggers/public/{public_id}/fire",
                cluster.api()
            );
            let response = cluster
                .http
                .post(url)
                .bearer_auth(&webhook_secret)
                .json(&json!({ "n": n }))
                .send()
                .await
                .expect("webhook");
            assert_eq!(response.status(), 202);
            let run: Value = response.json().await.expect("json");
            accepted.insert(run["id"].as_str().expect("id").to_owned());
        }
        if n == 60 {
            cluster.kill("worker-1");
        }
    }
    cluster
        .settled("the burst, after the killed worker's leases expire")
        .await;
    cluster.start("worker-1", "nexus-worker");

    // 3. Drop every Postgres connection of every role while runs are being accepted.
    let mut refused = 0;
    // Per stretch after each termination (at 10, 30, 50 and 70): how many were accepted.
    let mut recovered = [0usize; 4];
    for n in 0..80 {
        if n % 20 == 10 {
            sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
                .execute(&cluster.db.pool)
                .await
                .expect("terminate");
        }
        let (status, run) = cluster
            .post(
                &format!("/api/routines/{manual}/run"),
                &json!({ "payload": { "db": n } }),
            )
            .await;
        match status {
            202 => {
                accepted.insert(run["id"].as_str().expect("id").to_owned());
                if n >= 10 {
                    recovered[((n - 10) / 20).min(3)] += 1;
                }
            }
            503 | 0 => refused += 1,
            other => panic!("unexpected {other}: {run}"),
        }
    }
    // Each termination costs at most the statements on the connections it broke (a pool's
    // worth), and the API accepts again after every one of them: within each 20-request stretch
    // after the first three, and within 20 more requests after the last.
    assert!(refused <= 40, "{refused} of 80 refused");
    assert!(
        recovered[..3].iter().all(|n| *n > 0),
        "the API recovered after each termination: {recovered:?}"
    );
    if recovered[3] == 0 {
        let mut again = false;
        for n in 0..20 {
            let (status, run) = cluster
                .post(
                    &format!("/api/routines/{manual}/run"),
                    &json!({ "payload": { "db-after": n } }),
                )
                .await;
            if status == 202 {
                accepted.insert(run["id"].as_str().expect("id").to_owned());
                again = true;
                break;
            }
        }
        assert!(again, "the API recovered after the last termination");
    }
    cluster
        .settled("the runs accepted while connections were dropped")
        .await;

    // 4. Cut Redis across a minute boundary for longer than the grace period.
    // Early enough that the leader's term (3 s) has run out before the boundary.
    until_second(48, 53).await;
    cluster.redis.set_open(false);
    let missed = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute")
        + TimeDelta::minutes(1);
    let (status, run) = cluster
        .post(
            &format!("/api/routines/{manual}/run"),
            &json!({ "payload": { "redis": "down" } }),
        )
        .await;
    assert_eq!(status, 202, "manual runs are accepted without Redis: {run}");
    accepted.insert(run["id"].as_str().expect("id").to_owned());
    eventually(80, "the grace period to pass", || async {
        (Utc::now() > missed + TimeDelta::seconds(20)).then_some(())
    })
    .await;
    let fired_while_down: i64 =
        sqlx::query_scalar("SELECT count(*) FROM routine_runs WHERE scheduled_for = $1")
            .bind(missed)
            .fetch_one(&cluster.db.pool)
            .await
            .expect("count");
    assert_eq!(fired_while_down, 0, "nothing fires without a leader");
    cluster.redis.set_open(true);
    let recorded = eventually(60, "the missed fire to be recorded", || async {
        sqlx::query_as::<_, (String, Option<String>)>(
            "SELECT status, reason FROM routine_runs WHERE scheduled_for = $1",
        )
        .bind(missed)
        .fetch_optional(&cluster.db.pool)
        .await
        .ok()
        .flatten()
    })
    .await;
    assert_eq!(
        recorded,
        ("skipped".to_owned(), Some("missed_schedule".to_owned()))
    );
    let after = missed + TimeDelta::minutes(1);
    eventually(90, "fires to resume", || async {
        let status: Option<String> =
            sqlx::query_scalar("SELECT status FROM routine_runs WHERE scheduled_for = $1")
                .bind(after)
                .fetch_optional(&cluster.db.pool)
                .await
                .ok()
                .flatten();
        status.filter(|s| s != "received")
    })
    .await;
    cluster.settled("everything").await;

    // Every accepted request has exactly one run; every dispatched run exactly one issue.
    let runs: Vec<(String, String, Option<DateTime<Utc>>, String)> =
        sqlx::query_as("SELECT id::text, source, scheduled_for, status FROM routine_runs")
            .fetch_all(&cluster.db.pool)
            .await
            .expect("runs");
    let ids: BTreeSet<String> = runs.iter().map(|r| r.0.clone()).collect();
    assert!(accepted.is_subset(&ids), "an accepted run is missing");
    let unscheduled = runs.iter().filter(|r| r.1 != "schedule").count();
    assert_eq!(unscheduled, accepted.len(), "no run that was not accepted");
    let fires: Vec<DateTime<Utc>> = runs.iter().filter_map(|r| r.2).collect();
    let distinct: BTreeSet<_> = fires.iter().collect();
    assert_eq!(distinct.len(), fires.len(), "no schedule fire twice");
    let (first, last) = (
        **distinct.first().expect("fires"),
        **distinct.last().expect("fires"),
    );
    assert_eq!(
        i64::try_from(distinct.len()).ok(),
        Some((last - first).num_minutes() + 1),
        "no gap between fires"
    );
    assert!(
        distinct.contains(&boundary),
        "the fire after the leader was killed"
    );
    let issues: Vec<(String, i64)> =
        sqlx::query_as("SELECT origin_run_id::text, count(*) FROM issues GROUP BY origin_run_id")
            .fetch_all(&cluster.db.pool)
            .await
            .expect("issues");
    assert!(issues.iter().all(|(_, n)| *n == 1), "a run with two issues");
    let created = runs.iter().filter(|r| r.3 == "issue_created").count();
    assert_eq!(issues.len(), created, "every dispatched run has its issue");
    assert_eq!(
        cluster.scalar("SELECT count(*) FROM jobs").await,
        0,
        "every job completed (deleted): none running, queued or dead"
    );
}
