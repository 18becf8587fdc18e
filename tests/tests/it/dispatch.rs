//! Dispatch by the worker: the concurrency policies, templating, terminated assignees, issue
//! status flowing back into runs, concurrent dispatch across workers, and lease expiry.

use std::collections::HashMap;

use nexus_tests::{Team, TestApp, str_at};
use serde_json::{Value, json};

async fn run(app: &TestApp, routine: &str, payload: Value) -> String {
    app.board()
        .run_routine(routine, &json!({ "payload": payload }))
        .await
        .expect(202)
        .id()
}

async fn get_run(app: &TestApp, id: &str) -> Value {
    app.board().get_run(id).await.expect(200).body
}

async fn open_issues(app: &TestApp, team: &Team, routine: &str) -> Vec<Value> {
    let issues = app
        .board()
        .list_issues(&team.company, &format!("routineId={routine}"))
        .await
        .expect(200)
        .body;
    issues["issues"]
        .as_array()
        .expect("issues")
        .iter()
        .filter(|i| !matches!(i["status"].as_str(), Some("done" | "cancelled")))
        .cloned()
        .collect()
}

#[tokio::test]
async fn a_dispatched_run_creates_a_templated_issue_and_a_heartbeat_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let goal = app
        .board()
        .create_goal(&team.company, &json!({ "title": "Uptime" }))
        .await
        .expect(201)
        .id();
    let routine = app
        .seed_routine(
            &team,
            &json!({
                "title": "Report {{date}} on {{payload.topic}}",
                "description": "Look at {{payload.deep.key}}; missing: [{{payload.nope}}]",
                "priority": "critical", "goalId": goal,
            }),
        )
        .await;
    let run_id = run(
        &app,
        &routine,
        json!({ "topic": "billing", "deep": { "key": "invoices" } }),
    )
    .await;
    assert_eq!(app.drain().await, 1);

    let run = get_run(&app, &run_id).await;
    assert_eq!(run["status"], "issue_created");
    assert!(run["completedAt"].is_null());
    let issue = app
        .board()
        .get_issue(&str_at(&run, "/linkedIssueId"))
        .await
        .expect(200)
        .body;
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(issue["title"], format!("Report {today} on billing"));
    assert_eq!(issue["description"], "Look at invoices; missing: []");
    assert_eq!(issue["priority"], "critical");
    assert_eq!(issue["projectId"], team.project.as_str());
    assert_eq!(issue["goalId"], goal.as_str());
    assert_eq!(issue["assigneeAgentId"], team.agent.as_str());
    assert_eq!(issue["routineId"], routine.as_str());
    assert_eq!(issue["originRunId"], run_id.as_str());
    assert_eq!(issue["events"][0]["type"], "created");
    assert_eq!(issue["events"][0]["actorType"], "system");

    let heartbeats = app
        .caller(Some(&team.key))
        .my_heartbeat_runs("")
        .await
        .expect(200)
        .body;
    let heartbeat = &heartbeats["heartbeatRuns"][0];
    assert_eq!(heartbeat["id"], run["heartbeatRunId"]);
    assert_eq!(heartbeat["routineRunId"], run_id.as_str());
    assert_eq!(heartbeat["status"], "queued");
    assert_eq!(heartbeat["context"]["routineId"], routine.as_str());
    assert_eq!(heartbeat["context"]["source"], "manual");
    assert_eq!(heartbeat["context"]["title"], issue["title"]);
    assert_eq!(heartbeat["context"]["payload"]["topic"], "billing");

    let routine_body = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(routine_body["lastTriggeredAt"], run["triggeredAt"]);
    let activity = app
        .board()
        .activity(&team.company, "limit=1")
        .await
        .expect(200)
        .body;
    assert_eq!(activity["activity"][0]["action"], "run.dispatched");
    assert_eq!(activity["activity"][0]["actorType"], "system");
    // Dispatching again changes nothing.
    assert_eq!(app.drain().await, 0);
}

#[tokio::test]
async fn coalesce_if_active_joins_the_open_issue_and_rewakes_the_agent() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "coalesce_if_active" }))
        .await;
    let first = run(&app, &routine, json!({ "n": 1 })).await;
    let second = run(&app, &routine, json!({ "n": 2 })).await;
    app.drain().await;
    let first_run = get_run(&app, &first).await;
    let second_run = get_run(&app, &second).await;
    assert_eq!(first_run["status"], "issue_created");
    assert_eq!(second_run["status"], "coalesced");
    assert_eq!(second_run["reason"], "active_issue");
    assert_eq!(second_run["linkedIssueId"], first_run["linkedIssueId"]);
    assert_eq!(second_run["coalescedIntoRunId"], first.as_str());
    assert!(
        second_run["heartbeatRunId"].is_null(),
        "the agent still has a queued heartbeat run"
    );
    let issue_id = str_at(&first_run, "/linkedIssueId");
    let issue = app.board().get_issue(&issue_id).await.expect(200).body;
    let coalesced = issue["events"]
        .as_array()
        .expect("events")
        .iter()
        .find(|e| e["type"] == "fire_coalesced")
        .cloned()
        .expect("event");
    assert_eq!(coalesced["data"]["runId"], second.as_str());
    assert_eq!(coalesced["data"]["payload"], json!({ "n": 2 }));

    // The agent finishes its heartbeat run but leaves the issue open: the next fire wakes it again.
    let agent = app.caller(Some(&team.key));
    let heartbeat = str_at(&first_run, "/heartbeatRunId");
    agent.claim_heartbeat_run(&heartbeat).await.expect(200);
    agent
        .finish_heartbeat_run(&heartbeat, &json!({ "status": "succeeded" }))
        .await
        .expect(200);
    let third = run(&app, &routine, json!({ "n": 3 })).await;
    app.drain().await;
    let third_run = get_run(&app, &third).await;
    assert_eq!(third_run["status"], "coalesced");
    let rewake = str_at(&third_run, "/heartbeatRunId");
    let queued = agent
        .my_heartbeat_runs("status=queued")
        .await
        .expect(200)
        .body;
    assert_eq!(queued["heartbeatRuns"][0]["id"], rewake.as_str());
    assert_eq!(queued["heartbeatRuns"][0]["issueId"], issue_id.as_str());
    assert_eq!(
        queued["heartbeatRuns"][0]["context"]["payload"],
        json!({ "n": 3 })
    );

    // Once the issue is done its run completes, and the next fire opens a new issue.
    agent
        .update_issue(&issue_id, &json!({ "status": "done" }))
        .await
        .expect(200);
    let completed = get_run(&app, &first).await;
    assert_eq!(completed["status"], "completed");
    assert!(completed["completedAt"].is_string());
    assert_eq!(
        get_run(&app, &second).await["status"],
        "coalesced",
        "coalesced runs keep their status"
    );
    let fourth = run(&app, &routine, json!({})).await;
    app.drain().await;
    let fourth_run = get_run(&app, &fourth).await;
    assert_eq!(fourth_run["status"], "issue_created");
    assert_ne!(fourth_run["linkedIssueId"], json!(issue_id));
}

#[tokio::test]
async fn skip_if_active_and_always_enqueue() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let skip = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "skip_if_active" }))
        .await;
    let first = run(&app, &skip, json!({})).await;
    let second = run(&app, &skip, json!({})).await;
    app.drain().await;
    let first_run = get_run(&app, &first).await;
    let skipped = get_run(&app, &second).await;
    assert_eq!(skipped["status"], "skipped");
    assert_eq!(skipped["reason"], "active_issue");
    assert_eq!(skipped["linkedIssueId"], first_run["linkedIssueId"]);
    assert!(skipped["heartbeatRunId"].is_null());
    assert!(skipped["completedAt"].is_string());
    assert_eq!(open_issues(&app, &team, &skip).await.len(), 1);

    let always = app
        .seed_routine(&team, &json!({ "concurrencyPolicy": "always_enqueue" }))
        .await;
    let runs = [
        run(&app, &always, json!({})).await,
        run(&app, &always, json!({})).await,
        run(&app, &always, json!({})).await,
    ];
    app.drain().await;
    let mut issues = std::collections::HashSet::new();
    for id in &runs {
        let r = get_run(&app, id).await;
        assert_eq!(r["status"], "issue_created");
        issues.insert(str_at(&r, "/linkedIssueId"));
    }
    assert_eq!(issues.len(), 3);
    assert_eq!(open_issues(&app, &team, &always).await.len(), 3);
}

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

#[tokio::test]
async fn a_terminated_assignee_fails_the_run_and_creates_nothing() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;
    app.board()
        .update_agent(&team.agent, &json!({ "status": "terminated" }))
        .await
        .expect(200);
    app.drain().await;
    let failed = get_run(&app, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "agent_not_assignable");
    assert!(failed["failureReason"].is_string() && failed["linkedIssueId"].is_null());
    let issues = app
        .board()
        .list_issues(&team.company, &format!("routineId={routine}"))
        .await
        .expect(200);
    assert_eq!(issues.body["issues"], json!([]));
    // The agent's keys stopped working with it, so its heartbeat runs are read from the rows
    // (on Postgres; the conformance suite checks the embedded backend).
    if nexus_tests::backend_is_postgres() {
        assert_eq!(
            app.count(
                "SELECT count(*) FROM heartbeat_runs WHERE agent_id = $1::uuid",
                &team.agent
            )
            .await,
            0
        );
    }
}

#[tokio::test]
async fn a_cancelled_issue_fails_its_run() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    let routine = app.seed_routine(&team, &json!({})).await;
    let id = run(&app, &routine, json!({})).await;
    app.drain().await;
    let issue = str_at(&get_run(&app, &id).await, "/linkedIssueId");
    app.board()
        .update_issue(&issue, &json!({ "status": "cancelled" }))
        .await
        .expect(200);
    let failed = get_run(&app, &id).await;
    assert_eq!(failed["status"], "failed");
    assert_eq!(failed["reason"], "issue_cancelled");
    // Reopening the issue does not resurrect the run.
    app.board()
        .update_issue(&issue, &json!({ "status": "todo" }))
        .await
        .expect(200);
    assert_eq!(get_run(&app, &id).await["status"], "failed");
}

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
