//! A killed API replica and Postgres gone for seconds: no accepted request lost, each key one run.

use super::*;

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
