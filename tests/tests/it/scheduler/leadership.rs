//! Leadership: overlapping and deposed leaders, Redis outages and restarts, the in-process lease,
//! and leadership steps on the injected clock.

use super::*;

#[tokio::test]
async fn overlapping_and_deposed_leaders_fire_every_fire_exactly_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    let team = app.seed_team().await;
    let mut triggers = Vec::new();
    for _ in 0..20 {
        triggers.push(
            schedule(
                &app,
                &team,
                json!({ "concurrencyPolicy": "always_enqueue" }),
                json!({ "cronExpression": "* * * * *" }),
            )
            .await
            .1,
        );
    }
    let a = app.scheduler("a", Duration::from_secs(10));
    let b = app.scheduler("b", Duration::from_secs(10));
    let c = app.scheduler("c", Duration::from_secs(10));
    let mut deposed = 0;
    for minute in 1..=30 {
        clock.set(utc("2026-11-29T09:00:00Z") + TimeDelta::minutes(minute) + TimeDelta::seconds(2));
        // A keeps running with epoch 1 after B (epoch 2) took over; from minute 15, C (epoch 3)
        // takes over from B, which also keeps running.
        let newest = if minute < 15 { 2 } else { 3 };
        let (one, two) = (leader(1), leader(2));
        let (ra, rb, rc) = tokio::join!(a.fire_once(&one), b.fire_once(&two), async {
            if newest == 3 {
                c.fire_once(&leader(3)).await.map(Some)
            } else {
                Ok(None)
            }
        },);
        for result in [ra.map(|_| ()), rb.map(|_| ()), rc.map(|_| ())] {
            if let Err(e) = result {
                assert!(e.to_string().contains("deposed"), "{e}");
                deposed += 1;
            }
        }
    }
    assert!(deposed >= 30, "stale leaders were refused ({deposed})");
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger_id::text, scheduled_for::text FROM routine_runs")
            .fetch_all(&app.db.pool)
            .await
            .expect("runs");
    assert_eq!(rows.len(), 20 * 30, "one run per trigger and minute");
    for trigger in &triggers {
        let minutes: BTreeSet<&str> = rows
            .iter()
            .filter(|r| &r.0 == trigger)
            .map(|r| r.1.as_str())
            .collect();
        assert_eq!(minutes.len(), 30, "no gaps and no duplicates for {trigger}");
    }
    assert_eq!(
        app.count("SELECT count(*) FROM jobs WHERE kind = $1", "dispatch_run")
            .await,
        600
    );
    let epoch: i64 = sqlx::query_scalar("SELECT epoch FROM scheduler_epoch")
        .fetch_one(&app.db.pool)
        .await
        .expect("epoch");
    assert_eq!(epoch, 3);
    let _ = clock.now();
}

#[tokio::test]
async fn without_redis_nobody_leads_or_fires_and_fires_resume_with_catch_up_when_it_returns() {
    nexus_tests::needs_servers!();
    let proxy = nexus_tests::Proxy::redis(false).await;
    let clock = ManualClock::new(utc("2026-11-29T08:59:00Z"));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    let redis = nexus_shared::kv::Redis::new(
        &proxy.url,
        &app.config.redis_prefix,
        app.store.clock().clone(),
    )
    .expect("redis");
    let lock = nexus_scheduler::LeaderLock::new(
        nexus_shared::coord::Coordination::Redis(redis),
        "cut-off".to_owned(),
        Duration::from_secs(3),
    );
    let scheduler = nexus_scheduler::Scheduler::new(
        app.store.clone(),
        lock,
        nexus_scheduler::Settings::default(),
    );
    let (stop, task) = run_loop(scheduler.clone());

    clock.set(utc("2026-11-29T10:00:10Z"));
    // The loop keeps trying (every second) and stays a follower: nothing fires.
    for _ in 0..3 {
        let started = tokio::time::Instant::now();
        eventually(5, "a leadership attempt", || async {
            (started.elapsed() > Duration::from_millis(1100)).then_some(())
        })
        .await;
        assert!(!scheduler.is_leader());
    }
    assert!(runs(&app, &routine).await.is_empty());
    assert!(!task.is_finished(), "no crash");

    proxy.set_open(true);
    eventually(10, "leadership after Redis returns", || async {
        scheduler.is_leader().then_some(())
    })
    .await;
    let got = eventually(10, "the catch-up", || async {
        let got = runs(&app, &routine).await;
        (got.len() == 2).then_some(got)
    })
    .await;
    assert_eq!(got[0].2.as_deref(), Some("missed_schedule"));
    assert_eq!(got[0].4["count"], 4);
    assert_eq!(got[1].0, "2026-11-29T10:00:00Z");
    let _ = stop.send(true);
    task.await.expect("loop ends");
}

#[tokio::test]
async fn a_redis_that_lost_its_epoch_counter_still_elects_a_leader_that_fires() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:30Z").await;
    // An earlier leader wrote with epoch 50; this Redis prefix has never counted (as after a
    // Redis restart without persistence).
    let routine = every_minute_after_epoch(&app, 50).await;
    let scheduler = app.scheduler("after-restart", Duration::from_secs(10));
    let (stop, task) = run_loop(scheduler.clone());
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:00:00Z", 2).await;
    assert!(scheduler.is_leader());
    assert_eq!(epoch(&app).await, 51);
    stop.send(true).expect("stop");
    task.await.expect("stopped");
    let statuses: Vec<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(statuses.len(), 2, "{statuses:?}");
}

#[tokio::test]
async fn without_a_redis_url_the_process_elects_one_leader_in_memory_and_fires_once() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let clock = ManualClock::new(utc("2026-11-29T09:00:30Z"));
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        env: vec![("NEXUS_REDIS_URL", String::new())],
    })
    .await;
    assert!(!app.coordination.is_shared());
    let routine = every_minute_after_epoch(&app, 7).await;
    // Two schedulers on the process's coordination: one lease, so one leader.
    let a = app.scheduler("a", Duration::from_secs(10));
    let b = app.scheduler("b", Duration::from_secs(10));
    let (stop_a, task_a) = run_loop(a.clone());
    let (stop_b, task_b) = run_loop(b.clone());
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:00:00Z", 3).await;
    assert!(a.is_leader() != b.is_leader(), "exactly one leads");
    assert_eq!(
        epoch(&app).await,
        8,
        "the term continues the database's epochs"
    );
    // Releasing on shutdown lets the other take over with the next epoch.
    let (stop_leader, task_leader, follower) = if a.is_leader() {
        (stop_a, task_a, (stop_b, task_b, b))
    } else {
        (stop_b, task_b, (stop_a, task_a, a))
    };
    stop_leader.send(true).expect("stop");
    task_leader.await.expect("stopped");
    let (stop_follower, task_follower, follower) = follower;
    eventually(10, "the follower taking over", || async {
        follower.is_leader().then_some(())
    })
    .await;
    fire_minutes(&app, &clock, &routine, "2026-11-29T09:03:00Z", 1).await;
    assert_eq!(epoch(&app).await, 9);
    stop_follower.send(true).expect("stop");
    task_follower.await.expect("stopped");
    let fired: BTreeSet<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired.len(), 4, "one run per minute: {fired:?}");
    assert_eq!(runs(&app, &routine).await.len(), 4, "no duplicate");
}

#[tokio::test]
async fn leadership_steps_on_the_injected_clock_lapse_a_term_and_fence_off_its_writes() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_postgres_rows!();
    let (app, clock) = app_at("2026-11-29T09:00:58Z").await;
    let routine = every_minute_after_epoch(&app, 20).await;
    let ttl = Duration::from_secs(10);
    let (a, b) = (app.scheduler("a", ttl), app.scheduler("b", ttl));
    assert_eq!(a.lead_once().await, LeadStep::TookOffice(21));
    assert_eq!(b.lead_once().await, LeadStep::Following);
    assert_eq!(a.lead_once().await, LeadStep::Renewed(21));
    let held = a.leadership().expect("a leads");

    // 09:01:01, inside the term (until 09:01:08): a fires the minute.
    clock.set(utc("2026-11-29T09:01:01Z"));
    assert!(a.is_leader());
    a.fire_once(&held).await.expect("a fires");
    assert_eq!(runs(&app, &routine).await.len(), 1);

    // a stops renewing (a paused process): its term lapses on the clock, with no real wait.
    clock.advance(TimeDelta::seconds(7));
    assert!(!a.is_leader(), "the term lapsed at 09:01:08");
    assert!(a.leadership().is_none());
    // Its Redis lease runs out too (in Redis's own time; removed here rather than waited for),
    // and at the next minute b takes office with the next epoch.
    let redis = redis::Client::open(nexus_tests::redis_url()).expect("redis url");
    let mut conn = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:scheduler:leader", app.config.redis_prefix))
        .query_async(&mut conn)
        .await
        .expect("del");
    clock.set(utc("2026-11-29T09:02:01Z"));
    assert_eq!(b.lead_once().await, LeadStep::TookOffice(22));
    b.fire_once(&b.leadership().expect("b leads"))
        .await
        .expect("b fires");

    // a wakes up and writes with its old term: fenced off by the database, then it stands down.
    let refused = a.fire_once(&held).await.expect_err("a was deposed");
    assert!(
        matches!(
            refused,
            nexus_shared::store::StoreError::Refused(Refusal::Deposed { current: 22 })
        ),
        "{refused:?}"
    );
    assert_eq!(a.lead_once().await, LeadStep::Following);
    assert!(!a.is_leader());
    let fired: BTreeSet<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    assert_eq!(fired.len(), 2, "09:01 and 09:02, once each: {fired:?}");
    assert_eq!(epoch(&app).await, 22);
}
