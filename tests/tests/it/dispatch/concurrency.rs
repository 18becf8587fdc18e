//! Dispatch across workers: concurrent runs, a worker dying with a lease, a dispatch waiting for
//! another of its routine, and references that resolve within their company.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_runs_across_four_workers_open_exactly_one_issue() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "coalesce_if_active" }))
        .await;
    let mut requests = tokio::task::JoinSet::new();
    for n in 0..50 {
        let (base, token, routine) = (app.base.clone(), app.board_token.clone(), routine.clone());
        requests.spawn(async move {
            let resp = nexus_tests::http_client()
                .post(format!("{base}/api/routines/{routine}/run"))
                .bearer_auth(token)
                .json(&json!({ "payload": { "n": n } }))
                .send()
                .await
                .expect("answer");
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.expect("json")["id"]
                .as_str()
                .expect("id")
                .to_owned()
        });
    }
    let accepted: Vec<String> = requests.join_all().await;
    assert_eq!(accepted.len(), 50);

    // One job a claim, on a runtime with four threads: the workers really run side by side and
    // meet on the routine's row lock (with larger claims one worker could take all fifty).
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..4 {
        let worker = app.worker_batching(&format!("worker-{w}"), 1);
        workers.spawn(async move {
            let mut handled = 0;
            while let nexus_worker::Outcome::Worked(jobs) = worker.run_once().await.expect("step") {
                handled += jobs;
            }
            handled
        });
    }
    let per_worker: Vec<usize> = workers.join_all().await;
    assert_eq!(
        per_worker.iter().sum::<usize>(),
        50,
        "every job handled exactly once"
    );
    assert!(
        per_worker.iter().filter(|n| **n > 0).count() >= 2,
        "several workers dispatched: {per_worker:?}"
    );

    let mut by_status: HashMap<String, usize> = HashMap::new();
    let mut issue_ids = std::collections::HashSet::new();
    for id in &accepted {
        let r = get_run(&app, id).await;
        *by_status.entry(str_at(&r, "/status")).or_default() += 1;
        issue_ids.insert(str_at(&r, "/linkedIssueId"));
    }
    assert_eq!(
        by_status,
        HashMap::from([
            ("issue_created".to_owned(), 1),
            ("coalesced".to_owned(), 49)
        ])
    );
    assert_eq!(issue_ids.len(), 1, "every run points at the one issue");
    assert_eq!(open_issues(&app, &team, &routine).await.len(), 1);
    let events = app.count("SELECT count(*) FROM issue_events WHERE type = 'fire_coalesced' AND company_id = $1::uuid", &team.company).await;
    assert_eq!(events, 49);
    let queued_heartbeats = app
        .count(
            "SELECT count(*) FROM heartbeat_runs WHERE status = 'queued' AND agent_id = $1::uuid",
            &team.agent,
        )
        .await;
    assert_eq!(queued_heartbeats, 1, "one wake-up, not fifty");
    assert_eq!(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM jobs")
            .fetch_one(&app.db.pool)
            .await
            .expect("count"),
        0,
        "every job completed (deleted)"
    );
}

#[tokio::test]
async fn a_worker_that_dies_holding_a_lease_loses_the_job_to_another_and_the_effect_happens_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;

    // Worker A claims the job and "dies": it never finishes.
    let dead = app.worker("worker-a");
    let claimed = dead.queue().claim(1).await.expect("claim");
    assert_eq!(claimed.len(), 1);
    let worker_b = app.worker("worker-b");
    assert_eq!(
        worker_b.run_once().await.expect("step"),
        nexus_worker::Outcome::Idle,
        "the job is leased"
    );
    // Its lease runs out.
    sqlx::query("UPDATE jobs SET lease_until = now() - interval '1 second' WHERE id = $1")
        .bind(claimed[0].id)
        .execute(&app.db.pool)
        .await
        .expect("expire the lease");
    worker_b.maintain().await.expect("reap");
    assert_eq!(
        worker_b.run_once().await.expect("step"),
        nexus_worker::Outcome::Worked(1)
    );

    // The stale holder can no longer write anything about the job.
    assert!(
        !dead.queue().complete(&claimed[0]).await.expect("fence"),
        "a lost lease completes nothing"
    );
    let outcome = dead
        .queue()
        .retry(
            &claimed[0],
            &nexus_shared::queue::JobError::Retry("late".to_owned()),
        )
        .await
        .expect("retry");
    assert_eq!(outcome, nexus_shared::queue::RetryOutcome::LeaseLost);

    assert_eq!(get_run(&app, &id).await["status"], "issue_created");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM issues WHERE routine_id = $1::uuid",
            &routine
        )
        .await,
        1
    );
    // The second attempt completed the job: it is gone.
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE id = $1::uuid",
            &claimed[0].id.to_string()
        )
        .await,
        0
    );
}

/// The references only the engine writes are not foreign keys (migration
/// `20261201000003`, docs/operations.md "The schema's references"): after a workload that
/// writes each of them — dispatch, a coalesced fire and its re-wake, a skipped fire, an issue
/// created with an assignee through the API, its status change, audit entries — every one
/// resolves to a row of the same company.
#[tokio::test]
async fn references_only_the_engine_writes_resolve_within_their_company() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    // Two companies, so a reference into the wrong one would not resolve.
    let teams = [app.seed_team().await, app.seed_team().await];
    for team in &teams {
        let coalesce = app
            .seed_routine(team, &json!({ "concurrencyPolicy": "coalesce_if_active" }))
            .await;
        let skip = app
            .seed_routine(team, &json!({ "concurrencyPolicy": "skip_if_active" }))
            .await;
        for routine in [&coalesce, &coalesce, &skip, &skip] {
            run(&app, routine, json!({})).await;
        }
        app.drain().await;
        // The agent finishes its heartbeat run and leaves the issue open: the next fire
        // re-wakes it with a heartbeat run of the coalesced run.
        let agent = app.caller(Some(&team.key));
        let queued = agent
            .my_heartbeat_runs("status=queued")
            .await
            .expect(200)
            .body;
        for heartbeat in queued["heartbeatRuns"].as_array().expect("heartbeat runs") {
            let id = str_at(heartbeat, "/id");
            agent.claim_heartbeat_run(&id).await.expect(200);
            agent
                .finish_heartbeat_run(&id, &json!({ "status": "succeeded" }))
                .await
                .expect(200);
        }
        run(&app, &coalesce, json!({})).await;
        app.drain().await;
        let issue = app
            .board()
            .create_issue(
                &team.company,
                &json!({ "title": "By hand", "assigneeAgentId": team.agent }),
            )
            .await
            .expect(201)
            .id();
        agent
            .update_issue(&issue, &json!({ "status": "in_progress" }))
            .await
            .expect(200);
    }
    // (what, table, column, the table it points into, by `(company_id, id)`)
    const REFERENCES: &[(&str, &str, &str, &str)] = &[
        (
            "heartbeat run → agent",
            "heartbeat_runs",
            "agent_id",
            "agents",
        ),
        (
            "heartbeat run → issue",
            "heartbeat_runs",
            "issue_id",
            "issues",
        ),
        (
            "heartbeat run → run",
            "heartbeat_runs",
            "routine_run_id",
            "routine_runs",
        ),
        (
            "run → linked issue",
            "routine_runs",
            "linked_issue_id",
            "issues",
        ),
        (
            "run → heartbeat run",
            "routine_runs",
            "heartbeat_run_id",
            "heartbeat_runs",
        ),
        (
            "run → coalesced into",
            "routine_runs",
            "coalesced_into_run_id",
            "routine_runs",
        ),
        ("issue event → issue", "issue_events", "issue_id", "issues"),
    ];
    let mut checks: Vec<String> = REFERENCES
        .iter()
        .map(|(name, table, column, target)| {
            format!(
                "SELECT '{name}' AS name, EXISTS (SELECT FROM {target} t
                        WHERE t.company_id = s.company_id AND t.id = s.{column}) AS resolved
                 FROM {table} s WHERE s.{column} IS NOT NULL"
            )
        })
        .collect();
    checks.push(
        "SELECT 'audit entry → company', EXISTS (SELECT FROM companies c WHERE c.id = s.company_id)
         FROM activity_log s"
            .to_owned(),
    );
    let sql = format!(
        "SELECT name, count(*), count(*) FILTER (WHERE NOT resolved)
         FROM ({}) AS refs GROUP BY name ORDER BY name",
        checks.join(" UNION ALL ")
    );
    let rows: Vec<(String, i64, i64)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(&app.db.pool)
        .await
        .expect("references");
    assert_eq!(
        rows.len(),
        8,
        "every kind of reference was written: {rows:?}"
    );
    for (name, written, dangling) in &rows {
        assert!(*written > 0, "{name}: none written");
        assert_eq!(
            *dangling, 0,
            "{name}: {dangling} of {written} do not resolve"
        );
    }
    // The links beside the runs (migration `20261210000001`) say exactly what the runs say:
    // one per linked run — opened, coalesced or skipped into an issue — and none other.
    let (linked, links, unmatched, outcomes): (i64, i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT count(*) FROM routine_runs WHERE linked_issue_id IS NOT NULL),
                (SELECT count(*) FROM run_issue_links),
                (SELECT count(*) FROM run_issue_links l
                 WHERE NOT EXISTS (SELECT FROM routine_runs r
                                   WHERE r.id = l.run_id AND r.linked_issue_id = l.issue_id)),
                (SELECT count(DISTINCT status) FROM routine_runs WHERE linked_issue_id IS NOT NULL)",
    )
    .fetch_one(&app.db.pool)
    .await
    .expect("links");
    assert_eq!((links, unmatched), (linked, 0));
    assert!(
        outcomes >= 3,
        "opened, coalesced and skipped runs are linked"
    );
}

/// Two workers dispatch two runs of one `skip_if_active` routine at the same moment: the
/// second waits for the first on the routine's row lock and then sees its issue. The test
/// holds the agent's row, which every dispatch reads (shared) after taking its routine and
/// run, so the first dispatch stops halfway and the second is sent while it is open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatch_waits_for_an_open_dispatch_of_its_routine_and_sees_its_issue() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "skip_if_active" }))
        .await;
    let first = run(&app, &routine, json!({ "n": 1 })).await;
    let second = run(&app, &routine, json!({ "n": 2 })).await;
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT FROM agents WHERE id = $1::uuid FOR UPDATE")
        .bind(&team.agent)
        .execute(&mut *holder)
        .await
        .expect("hold the agent");
    let mut steps = Vec::new();
    for (n, name) in ["first", "second"].into_iter().enumerate() {
        let worker = app.worker_batching(name, 1);
        steps.push(tokio::spawn(async move {
            worker.run_once().await.expect("step")
        }));
        app.until_sessions_wait_for_a_lock(i64::try_from(n + 1).expect("small"), name)
            .await;
    }
    holder.commit().await.expect("release the agent");
    for step in steps {
        assert_eq!(step.await.expect("step"), nexus_worker::Outcome::Worked(1));
    }
    let (first, second) = (get_run(&app, &first).await, get_run(&app, &second).await);
    assert_eq!(first["status"], "issue_created");
    assert_eq!(second["status"], "skipped", "{second}");
    assert_eq!(second["reason"], "active_issue");
    assert_eq!(open_issues(&app, &team, &routine).await.len(), 1);
}
