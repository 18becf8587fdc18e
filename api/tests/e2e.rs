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

#[tokio::test]
async fn the_distributed_system_fires_exactly_once_through_crashes_and_outages() {
    nexus_tests::needs_servers!();
    let (mut cluster, _) = Cluster::new(false).await;
    cluster
        .launch(
            2,
            &[
                ("scheduler-1", "nexus-scheduler"),
                ("scheduler-2", "nexus-scheduler"),
                ("worker-1", "nexus-worker"),
                ("worker-2", "nexus-worker"),
            ],
        )
        .await;

    // A company with a minutely schedule, a webhook and a routine for manual runs.
    let team = cluster.team().await;
    cluster
        .routine(
            &team,
            "minutely",
            Some(json!({ "kind": "schedule", "cronExpression": "* * * * *" })),
        )
        .await;
    let (manual, _) = cluster.routine(&team, "manual", None).await;
    let (_, webhook) = cluster
        .routine(&team, "hooked", Some(json!({ "kind": "webhook" })))
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
    let created = runs.iter().filter(|r| r.3 == "issue_created").count();
    assert_eq!(
        cluster.runs_with_one_issue().await,
        created,
        "every dispatched run has its issue"
    );
    assert_eq!(
        cluster.scalar("SELECT count(*) FROM jobs").await,
        0,
        "every job completed (deleted): none running, queued or dead"
    );
}

/// What each request of a burst was answered, by idempotency key: the status (0: no answer,
/// the connection failed) and the run's id on a 202.
type Answers = Vec<(String, u16, Option<String>)>;

/// One manual run with its own idempotency key `key`, to `api`.
async fn keyed_run(
    cluster: &Cluster,
    api: &str,
    routine: &str,
    key: String,
) -> (String, u16, Option<String>) {
    let (status, run) = cluster
        .post_to(
            api,
            &format!("/api/routines/{routine}/run"),
            &json!({ "idempotencyKey": key, "payload": { "key": key } }),
        )
        .await;
    let id = (status == 202).then(|| run["id"].as_str().expect("id").to_owned());
    assert!(
        matches!(status, 0 | 202 | 503),
        "{key}: only accepted, unavailable or unanswered, never {status}: {run}"
    );
    (key, status, id)
}

/// Checks the outcome of `answers` against the database, after sending every unanswered or
/// refused request again (the sender's retry, same key) to `api`: every 202 has its run, a
/// retry of an accepted request gets the same run, and each key ends with exactly one run.
async fn every_key_has_one_run(cluster: &Cluster, api: &str, routine: &str, answers: Answers) {
    let mut runs_by_key: HashMap<String, String> = HashMap::new();
    for (key, status, id) in answers {
        let id = match (status, id) {
            (202, Some(id)) => {
                let stored: Option<String> = sqlx::query_scalar(
                    "SELECT idempotency_key FROM routine_runs WHERE id = $1::uuid",
                )
                .bind(&id)
                .fetch_optional(&cluster.db.pool)
                .await
                .expect("run");
                assert_eq!(
                    stored.as_deref(),
                    Some(key.as_str()),
                    "an accepted run was lost"
                );
                id
            }
            _ => {
                let (_, retried, id) = keyed_run(cluster, api, routine, key.clone()).await;
                assert_eq!(retried, 202, "{key}: the retry is accepted");
                id.expect("id")
            }
        };
        runs_by_key.insert(key, id);
    }
    let stored: Vec<(String, String)> = sqlx::query_as(
        "SELECT idempotency_key, id::text FROM routine_runs
         WHERE routine_id = $1::uuid AND idempotency_key = ANY($2)",
    )
    .bind(routine)
    .bind(runs_by_key.keys().collect::<Vec<_>>())
    .fetch_all(&cluster.db.pool)
    .await
    .expect("runs");
    assert_eq!(stored.len(), runs_by_key.len(), "exactly one run per key");
    let differing: Vec<_> = stored
        .iter()
        .filter(|(key, id)| runs_by_key.get(key) != Some(id))
        .collect();
    assert!(
        differing.is_empty(),
        "runs other than the ones answered: {differing:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_api_replica_and_postgres_gone_for_seconds_lose_no_accepted_request() {
    nexus_tests::needs_servers!();
    let (mut cluster, postgres) = Cluster::new(true).await;
    let postgres = postgres.expect("a proxied database");
    cluster
        .launch(
            2,
            &[
                ("scheduler-1", "nexus-scheduler"),
                ("worker-1", "nexus-worker"),
            ],
        )
        .await;
    let team = cluster.team().await;
    let (manual, _) = cluster.routine(&team, "manual", None).await;
    let (minutely, _) = cluster
        .routine(
            &team,
            "minutely",
            Some(json!({ "kind": "schedule", "cronExpression": "* * * * *" })),
        )
        .await;
    let cluster = std::sync::Arc::new(tokio::sync::RwLock::new(cluster));

    // 1. A burst of 200 keyed runs, 8 at a time, alternating between the replicas; api-1 is
    //    SIGKILLed once 60 have been answered.
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let apis = cluster.read().await.apis.clone();
    let gate = std::sync::Arc::new(tokio::sync::Semaphore::new(8));
    let mut burst = tokio::task::JoinSet::new();
    for n in 0..200 {
        let (cluster, gate, answered, api) = (
            cluster.clone(),
            gate.clone(),
            answered.clone(),
            apis[n % 2].clone(),
        );
        let manual = manual.clone();
        burst.spawn(async move {
            let _turn = gate.acquire_owned().await.expect("gate");
            let answer =
                keyed_run(&*cluster.read().await, &api, &manual, format!("kill-{n}")).await;
            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            answer
        });
    }
    eventually(60, "60 answers", || async {
        (answered.load(std::sync::atomic::Ordering::SeqCst) >= 60).then_some(())
    })
    .await;
    let killed = cluster
        .write()
        .await
        .processes
        .remove("api-1")
        .expect("api-1");
    drop(killed); // SIGKILL, and reaped
    let answers: Answers = burst.join_all().await;
    let cluster = std::sync::Arc::into_inner(cluster)
        .expect("the burst is over")
        .into_inner();
    // Requests in flight to api-1 and those sent to it after the kill had no answer.
    assert!(answers.iter().any(|a| a.1 == 0) && answers.iter().any(|a| a.1 == 202));
    every_key_has_one_run(&cluster, &apis[1], &manual, answers).await;

    // 2. Postgres unreachable for 8 s across a minute boundary (every connection cut, new
    //    ones refused) while runs are requested every 100 ms and the last ones are being
    //    dispatched: requests are answered 503 (never 500, never a 202 without its run), the
    //    API accepts again once Postgres is back, the boundary's fire happens exactly once,
    //    and every run is dispatched once.
    until_second(50, 53).await;
    let boundary = Utc::now()
        .duration_trunc(TimeDelta::minutes(1))
        .expect("minute")
        + TimeDelta::minutes(1);
    let mut answers: Answers = Vec::new();
    let mut cut_at = None;
    for n in 0..150 {
        if n == 40 {
            postgres.set_open(false);
            cut_at = Some(std::time::Instant::now());
        }
        if cut_at.is_some_and(|at| at.elapsed() >= std::time::Duration::from_secs(8)) {
            postgres.set_open(true);
            cut_at = None;
        }
        answers.push(keyed_run(&cluster, &apis[1], &manual, format!("outage-{n}")).await);
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    postgres.set_open(true);
    let statuses: Vec<u16> = answers.iter().map(|a| a.1).collect();
    assert!(statuses[..40].iter().all(|s| *s == 202), "{statuses:?}");
    assert!(statuses.contains(&503), "the outage was seen: {statuses:?}");
    assert_eq!(
        statuses.last(),
        Some(&202),
        "accepted again after: {statuses:?}"
    );
    every_key_has_one_run(&cluster, &apis[1], &manual, answers).await;
    cluster.settled("everything after the outage").await;
    let fired: Vec<String> = sqlx::query_scalar(
        "SELECT status FROM routine_runs WHERE routine_id = $1::uuid AND scheduled_for = $2",
    )
    .bind(&minutely)
    .bind(boundary)
    .fetch_all(&cluster.db.pool)
    .await
    .expect("fires");
    assert_eq!(
        fired,
        ["issue_created"],
        "the fire during the outage, once, on time"
    );
    cluster.runs_with_one_issue().await;
    assert_eq!(
        cluster
            .scalar("SELECT count(*) FROM routine_runs WHERE status <> 'issue_created'")
            .await,
        0,
        "every run dispatched"
    );
}
