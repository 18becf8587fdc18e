//! Dispatching in batches: the same decisions as one run at a time, a failing batch retried job by
//! job, a dispatch blocked past its lease.

use super::*;

/// What a backlog of runs came to, in acceptance order: (routine label, status, reason, woke
/// an agent, which issue by order of first appearance), and the rows created.
type Dispatched = (Vec<(String, String, String, bool, Option<usize>)>, [i64; 4]);

/// Accepts three rounds of runs for routines of every policy (and one whose agent is
/// terminated, one archived), then dispatches them with a worker claiming `batch` at once.
async fn dispatch_backlog(batch: usize) -> Dispatched {
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let (retired, _) = app.seed_agent(&team.company, "Retired").await;
    let mut routines = Vec::new();
    for policy in ["always_enqueue", "skip_if_active", "coalesce_if_active"] {
        let id = app
            .seed_routine(&team, &json!({ "concurrencyPolicy": policy }))
            .await;
        routines.push((policy.to_owned(), id));
    }
    let orphan = app
        .seed_routine(&team, &json!({ "assigneeAgentId": retired }))
        .await;
    routines.push(("terminated_agent".to_owned(), orphan));
    let archived = app.seed_routine(&team, &json!({})).await;
    routines.push(("archived".to_owned(), archived.clone()));
    let mut runs = Vec::new();
    for round in 0..3 {
        for (label, routine) in &routines {
            runs.push((
                label.clone(),
                run(&app, routine, json!({ "round": round })).await,
            ));
        }
    }
    app.board()
        .update_agent(&retired, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    app.board()
        .update_routine(&archived, &json!({ "status": "archived" }))
        .await
        .expect(200);

    let worker = app.worker_batching("batcher", batch);
    let (mut steps, mut jobs) = (0, 0);
    while let nexus_worker::Outcome::Worked(n) = worker.run_once().await.expect("step") {
        steps += 1;
        jobs += n;
    }
    assert_eq!(jobs, runs.len(), "every job handled once");
    assert_eq!(
        steps,
        runs.len().div_ceil(batch),
        "claimed {batch} at a time"
    );

    let mut issues: Vec<String> = Vec::new();
    let mut outcomes = Vec::new();
    for (label, id) in &runs {
        let r = get_run(&app, id).await;
        let issue = r["linkedIssueId"].as_str().map(|issue| {
            issues.iter().position(|i| i == issue).unwrap_or_else(|| {
                issues.push(issue.to_owned());
                issues.len() - 1
            })
        });
        outcomes.push((
            label.clone(),
            str_at(&r, "/status"),
            r["reason"].as_str().unwrap_or_default().to_owned(),
            r["heartbeatRunId"].is_string(),
            issue,
        ));
    }
    let counts = [
        app.count("SELECT count(*) FROM issues WHERE company_id = $1::uuid", &team.company).await,
        app.count("SELECT count(*) FROM issue_events WHERE company_id = $1::uuid", &team.company).await,
        app.count("SELECT count(*) FROM heartbeat_runs WHERE company_id = $1::uuid", &team.company).await,
        app.count(
            "SELECT count(*) FROM activity_log WHERE action = 'run.dispatched' AND company_id = $1::uuid",
            &team.company,
        )
        .await,
    ];
    (outcomes, counts)
}

#[tokio::test]
async fn a_batch_dispatch_decides_exactly_like_one_run_at_a_time() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let one_by_one = dispatch_backlog(1).await;
    let batched = dispatch_backlog(100).await;
    assert_eq!(batched, one_by_one);
    // And what both did is the policies' answer, round after round.
    let of = |label: &str| -> Vec<(String, String, bool, Option<usize>)> {
        batched
            .0
            .iter()
            .filter(|o| o.0 == label)
            .map(|o| (o.1.clone(), o.2.clone(), o.3, o.4))
            .collect()
    };
    let issue_of = |label: &str| of(label)[0].3;
    let always: Vec<_> = of("always_enqueue")
        .iter()
        .map(|o| (o.0.clone(), o.2))
        .collect();
    assert_eq!(always, vec![("issue_created".to_owned(), true); 3]);
    let skip = issue_of("skip_if_active");
    assert_eq!(
        of("skip_if_active"),
        vec![
            ("issue_created".to_owned(), String::new(), true, skip),
            ("skipped".to_owned(), "active_issue".to_owned(), false, skip),
            ("skipped".to_owned(), "active_issue".to_owned(), false, skip),
        ]
    );
    let coalesce = issue_of("coalesce_if_active");
    assert_eq!(
        of("coalesce_if_active"),
        vec![
            ("issue_created".to_owned(), String::new(), true, coalesce),
            (
                "coalesced".to_owned(),
                "active_issue".to_owned(),
                false,
                coalesce
            ),
            (
                "coalesced".to_owned(),
                "active_issue".to_owned(),
                false,
                coalesce
            ),
        ],
        "the agent is already awake on the issue: no second wake-up"
    );
    assert_eq!(
        of("terminated_agent"),
        vec![
            (
                "failed".to_owned(),
                "agent_not_assignable".to_owned(),
                false,
                None
            );
            3
        ]
    );
    assert_eq!(
        of("archived"),
        vec![
            (
                "skipped".to_owned(),
                "routine_archived".to_owned(),
                false,
                None
            );
            3
        ]
    );
    // 5 issues; 5 `created` + 2 `fire_coalesced` events; 5 heartbeat runs; 15 audit entries.
    assert_eq!(batched.1, [5, 7, 5, 15]);
}

#[tokio::test]
async fn a_batch_that_fails_is_dispatched_job_by_job_and_loses_nothing() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "always_enqueue" }))
        .await;
    let good = [
        run(&app, &routine, json!({})).await,
        run(&app, &routine, json!({})).await,
    ];
    // A job the batch cannot dispatch (no run id), among good ones.
    sqlx::query(
        "INSERT INTO jobs (id, kind, payload, state, run_at, max_attempts, created_at, updated_at)
         VALUES (gen_random_uuid(), 'dispatch_run', '{\"runId\": \"not-a-uuid\"}', 'queued', now(), 10, now(), now())",
    )
    .execute(&app.db.pool)
    .await
    .expect("bad job");
    assert_eq!(app.drain().await, 3);
    for id in &good {
        assert_eq!(get_run(&app, id).await["status"], "issue_created");
    }
    let states: Vec<(String, Option<String>)> =
        sqlx::query_as("SELECT state, last_error FROM jobs ORDER BY state")
            .fetch_all(&app.db.pool)
            .await
            .expect("jobs");
    // The good jobs were completed (deleted); the bad one alone is dead.
    assert_eq!(states.len(), 1, "{states:?}");
    assert_eq!(states[0].0, "dead", "the bad job alone is dead: {states:?}");
    assert!(states[0].1.as_deref().is_some_and(|e| e.contains("runId")));
}

#[tokio::test]
async fn a_dispatch_blocked_past_the_lease_gives_up_and_its_job_is_claimed_with_a_lease() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;
    let settings = nexus_worker::Settings {
        lease: std::time::Duration::from_millis(300),
        ..nexus_worker::Settings::default()
    };
    let worker =
        nexus_worker::Worker::new(app.store.clone(), "slow".to_owned(), settings).expect("worker");
    // Another transaction holds the routine, so the dispatch in the taking transaction waits.
    let mut holder = app.db.pool.begin().await.expect("begin");
    sqlx::query("SELECT FROM routines WHERE id = $1::uuid FOR UPDATE")
        .bind(&routine)
        .execute(&mut *holder)
        .await
        .expect("hold the routine");
    let step = tokio::spawn(async move { worker.run_once().await.expect("step") });
    // Past the lease the database ends that transaction; the job is then claimed with a lease
    // (visible, committed) while its dispatch waits again.
    let job: (String, String, i32) = nexus_tests::eventually(10, "a leased claim", || async {
        sqlx::query_as::<_, (String, Option<String>, i32)>(
            "SELECT state, lease_owner, attempts FROM jobs WHERE payload->>'runId' = $1",
        )
        .bind(&id)
        .fetch_one(&app.db.pool)
        .await
        .ok()
        .and_then(|(state, owner, attempts)| owner.map(|o| (state, o, attempts)))
    })
    .await;
    assert_eq!(job, ("running".to_owned(), "slow".to_owned(), 1));
    assert_eq!(get_run(&app, &id).await["status"], "received");
    holder.commit().await.expect("release");
    assert_eq!(step.await.expect("step"), nexus_worker::Outcome::Worked(1));
    assert_eq!(get_run(&app, &id).await["status"], "issue_created");
    assert_eq!(
        app.count(
            "SELECT count(*) FROM jobs WHERE payload->>'runId' = $1",
            &id
        )
        .await,
        0,
        "completed, so deleted"
    );
}

/// A dispatch that opens issues updates its runs in place: each run's new row version is
/// heap-only (HOT) — on the run's own page, with no new entry in any index of `routine_runs` —
/// even when every run of its pages is dispatched in the one transaction (migration
/// `20261210000001`: no index names a column the dispatch changes, and inserts leave 55 % of
/// each new page for those versions). The deadlines and issue links those indexes gave are
/// written beside the runs.
#[tokio::test]
async fn a_dispatch_that_opens_issues_updates_its_runs_in_place() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(
            &team,
            &json!({ "concurrencyPolicy": "always_enqueue", "runTimeoutSec": 3600 }),
        )
        .await;
    let mut runs = Vec::new();
    for n in 0..120 {
        runs.push(
            run(
                &app,
                &routine,
                json!({ "n": n, "note": "a payload of some size" }),
            )
            .await,
        );
    }
    let worker = app.worker_batching("in-place", runs.len());
    assert!(matches!(
        worker.run_once().await.expect("step"),
        nexus_worker::Outcome::Worked(120)
    ));

    sqlx::raw_sql("CREATE EXTENSION IF NOT EXISTS pageinspect")
        .execute(&app.db.pool)
        .await
        .expect("pageinspect");
    let (opened, heap_only, pages): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE r.status = 'issue_created' AND r.linked_issue_id IS NOT NULL),
                count(*) FILTER (WHERE h.t_infomask2 & 32768 <> 0),
                count(DISTINCT (r.ctid::text::point)[0])::bigint
         FROM routine_runs r
         CROSS JOIN LATERAL heap_page_items(
             get_raw_page('routine_runs', (r.ctid::text::point)[0]::int)) h
         WHERE h.lp = (r.ctid::text::point)[1]::int AND r.id = ANY($1::uuid[])",
    )
    .bind(&runs)
    .fetch_one(&app.db.pool)
    .await
    .expect("row versions");
    assert_eq!(opened, 120, "every run opened an issue");
    assert!(pages > 1, "the runs fill more than one page ({pages})");
    assert_eq!(heap_only, 120, "every dispatched run updated in place");

    // Each run waits on its issue until its deadline, and is linked to it.
    let mirrored: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM routine_runs r
         JOIN run_deadlines d ON d.run_id = r.id AND d.issue_id = r.linked_issue_id
         JOIN run_issue_links l ON l.run_id = r.id AND l.issue_id = r.linked_issue_id
         WHERE r.id = ANY($1::uuid[])
           AND d.deadline_at = r.updated_at + interval '3600 seconds'",
    )
    .bind(&runs)
    .fetch_one(&app.db.pool)
    .await
    .expect("deadlines and links");
    assert_eq!(mirrored, 120);
}
