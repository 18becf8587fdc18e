//! Two of every role through crashes and outages: each schedule, webhook and manual run exactly
//! once.

use super::*;

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
