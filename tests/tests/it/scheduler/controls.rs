//! Schedule controls: jitter (a stable offset per fire, the grace counted from it) and backfill
//! (exactly once beside the scheduler and other backfills, oldest first, bounded, over
//! daylight-saving days as the live schedule has them). Runs on both backends.

use super::*;

fn at_of(value: &Value) -> DateTime<Utc> {
    utc(value.as_str().expect("an instant"))
}

/// A routine with one schedule trigger whose jitter offset for its first fire is over
/// `min_offset` (trigger ids are random: a few tries find one); returns routine, trigger and
/// the first fire's real instant.
async fn jittered(
    app: &TestApp,
    team: &Team,
    cron: &str,
    jitter: i64,
    min_offset: TimeDelta,
) -> (String, String, DateTime<Utc>) {
    for _ in 0..20 {
        let (routine, trigger) = schedule(
            app,
            team,
            json!({}),
            json!({ "cronExpression": cron, "jitterSec": jitter }),
        )
        .await;
        let shown = app.board().get_routine(&routine).await.expect(200).body;
        let real = at_of(&shown["triggers"][0]["nextRunAt"]);
        let nominal = at_of(
            &app.board()
                .upcoming(&routine, "count=1")
                .await
                .expect(200)
                .body["fires"][0]["scheduledFor"],
        );
        if real - nominal > min_offset {
            return (routine, trigger, real);
        }
        app.board().delete_trigger(&trigger).await.expect(204);
    }
    panic!("no trigger with an offset over {min_offset}");
}

#[tokio::test]
async fn a_jittered_fire_takes_effect_at_its_offset_whichever_process_handles_it() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T08:58:00Z").await;
    let team = app.seed_team().await;
    let (routine, _, real) = jittered(&app, &team, "0 9 * * *", 600, TimeDelta::seconds(2)).await;
    let nominal = utc("2026-11-29T09:00:00Z");
    assert!(real > nominal && real < nominal + TimeDelta::seconds(600));
    // `/upcoming` shows the real instants with their nominal times; tomorrow's offset is
    // another one, in the same range.
    let upcoming = app
        .board()
        .upcoming(&routine, "count=2")
        .await
        .expect(200)
        .body;
    assert_eq!(at_of(&upcoming["fires"][0]["at"]), real);
    assert_eq!(at_of(&upcoming["fires"][0]["scheduledFor"]), nominal);
    let tomorrow = nominal + TimeDelta::days(1);
    assert_eq!(at_of(&upcoming["fires"][1]["scheduledFor"]), tomorrow);
    let later = at_of(&upcoming["fires"][1]["at"]);
    assert!(later >= tomorrow && later < tomorrow + TimeDelta::seconds(600));
    if nexus_tests::backend_is_postgres() {
        // Another API replica computes the same instant.
        let replica = app.spawn_replica().await;
        let seen: Value = nexus_tests::http_client()
            .get(format!("{replica}/api/routines/{routine}"))
            .bearer_auth(&app.board_token)
            .send()
            .await
            .expect("replica answers")
            .json()
            .await
            .expect("json");
        assert_eq!(at_of(&seen["triggers"][0]["nextRunAt"]), real);
    }
    // At the nominal time the fire is prepared for its real instant; a second scheduler (a
    // new leader after a restart) finds it done and writes nothing.
    clock.set(nominal + TimeDelta::seconds(1));
    let first = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!((first.dispatched, first.prepared), (1, 1));
    let second = app
        .scheduler("s2", Duration::from_secs(10))
        .fire_once(&leader(2))
        .await
        .expect("fire");
    assert_eq!(second.dispatched, 0);
    assert_eq!(app.store.next_job_at().await.expect("jobs"), Some(real));
    assert!(
        runs(&app, &routine).await.is_empty(),
        "not visible before it takes effect"
    );
    assert_eq!(
        app.drain().await,
        0,
        "nothing is due before the real instant"
    );
    clock.set(real);
    assert_eq!(app.drain().await, 1);
    let listed = app.board().list_runs(&routine, "").await.expect(200).body;
    let run = &listed["runs"][0];
    assert_eq!(listed["runs"].as_array().map(Vec::len), Some(1));
    assert_eq!(at_of(&run["scheduledFor"]), nominal);
    assert_eq!(at_of(&run["triggeredAt"]), real);
    assert_eq!(
        (str_at(run, "/status"), run["catchUp"].clone()),
        ("issue_created".to_owned(), json!(false))
    );
}

#[tokio::test]
async fn the_grace_counts_from_the_jittered_instant() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T08:00:00Z").await;
    let team = app.seed_team().await;
    // An offset of more than two minutes: a minute after the real instant is on time though
    // the nominal time is longer ago than the grace (60 s).
    let (on_time, _, real) =
        jittered(&app, &team, "0 9 * * *", 3600, TimeDelta::seconds(120)).await;
    clock.set(real + TimeDelta::seconds(60));
    let report = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!((report.dispatched, report.missed_fires), (1, 0));
    assert_eq!(runs(&app, &on_time).await[0].1, "received");
    // A minute and a millisecond after its real instant, a fire is missed.
    let (missed, _, real) =
        jittered(&app, &team, "0 12 * * *", 3600, TimeDelta::seconds(120)).await;
    clock.set(real + TimeDelta::milliseconds(60_001));
    let report = app
        .scheduler("s1", Duration::from_secs(10))
        .fire_once(&leader(1))
        .await
        .expect("fire");
    assert_eq!((report.dispatched, report.missed_fires), (0, 1));
    let got = runs(&app, &missed).await;
    assert_eq!(
        (got[0].1.as_str(), got[0].2.as_deref()),
        ("skipped", Some("missed_schedule"))
    );
}

#[tokio::test]
async fn backfill_makes_each_fire_exactly_once_beside_the_scheduler_and_other_backfills() {
    nexus_tests::needs_servers!();
    let (app, clock) = app_at("2026-11-29T11:00:00Z").await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({ "concurrencyPolicy": "always_enqueue" }),
        json!({ "cronExpression": "*/15 * * * *" }),
    )
    .await;
    let scheduler = app.scheduler("s1", Duration::from_secs(10));
    for minute in ["11:15", "11:30"] {
        clock.set(utc(&format!("2026-11-29T{minute}:01Z")));
        let fired = scheduler.fire_once(&leader(1)).await.expect("fire");
        assert_eq!(fired.dispatched, 1);
    }
    // At 12:00:30 four identical backfills of [10:00, 12:00:30) and a fire pass (11:45 missed,
    // 12:00 on time) run at once: nine nominal fires, each must end with exactly one run.
    clock.set(utc("2026-11-29T12:00:30Z"));
    let body = json!({ "from": "2026-11-29T10:00:00Z", "to": "2026-11-29T12:00:30Z" });
    let board = app.board();
    let leadership = leader(1);
    let (answers, fired) = tokio::join!(
        futures_util::future::join_all((0..4).map(|_| board.backfill(&routine, &body))),
        scheduler.fire_once(&leadership),
    );
    let fired = fired.expect("fire");
    let mut created = 0;
    for answer in answers {
        let answer = answer.expect(202).body;
        let runs = answer["runs"].as_array().expect("runs");
        created += runs.len();
        assert_eq!(
            runs.len() + answer["existing"].as_u64().expect("existing") as usize,
            9
        );
        for run in runs {
            assert_eq!(
                (str_at(run, "/source"), run["catchUp"].clone()),
                ("backfill".to_owned(), json!(true))
            );
        }
    }
    assert_eq!(created + fired.dispatched + fired.skipped_runs + 2, 9);
    let nominal: Vec<String> = runs(&app, &routine)
        .await
        .into_iter()
        .map(|r| r.0)
        .collect();
    let expected: Vec<String> = (0..9)
        .map(|i| {
            (utc("2026-11-29T10:00:00Z") + TimeDelta::minutes(15 * i))
                .format("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        })
        .collect();
    assert_eq!(nominal, expected, "every fire of the range once");
    // A backfill of the same range again finds every fire done.
    let again = board.backfill(&routine, &body).await.expect(202).body;
    assert_eq!(
        (
            again["runs"].as_array().map(Vec::len),
            again["existing"].clone()
        ),
        (Some(0), json!(9))
    );
}

#[tokio::test]
async fn backfilled_runs_are_dispatched_oldest_first_and_keep_the_live_daylight_saving_instants() {
    nexus_tests::needs_servers!();
    // History kept for a year, so that a backfill may reach back to March.
    let app = TestApp::spawn_with(Options {
        clock: Some(ManualClock::new(utc("2026-11-29T11:00:00Z"))),
        env: vec![("NEXUS_RETENTION_DAYS", "365".to_owned())],
    })
    .await;
    let team = app.seed_team().await;
    let (routine, trigger) = schedule(
        &app,
        &team,
        json!({ "concurrencyPolicy": "coalesce_if_active", "title": "Report {{date}}" }),
        json!({ "cronExpression": "30 2 * * *", "timezone": "Europe/Amsterdam" }),
    )
    .await;
    // Spring forward (2026-03-29: the 02:30 that does not exist fires at 03:00 CEST) and fall
    // back (2026-10-25: the first 02:30 only), as the live schedule fires them.
    let spring = app
        .board()
        .backfill(
            &routine,
            &json!({ "from": "2026-03-28T12:00:00Z", "to": "2026-03-30T12:00:00Z", "triggerId": trigger }),
        )
        .await
        .expect(202)
        .body;
    let fall = app
        .board()
        .backfill(
            &routine,
            &json!({ "from": "2026-10-24T12:00:00Z", "to": "2026-10-26T12:00:00Z" }),
        )
        .await
        .expect(202)
        .body;
    let instants = |answer: &Value| -> Vec<String> {
        answer["runs"]
            .as_array()
            .expect("runs")
            .iter()
            .map(|r| str_at(r, "/scheduledFor"))
            .collect()
    };
    assert_eq!(
        instants(&spring),
        ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]
    );
    assert_eq!(
        instants(&fall),
        ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]
    );
    // One worker takes them in the order they were written: the oldest opens the issue, the
    // others coalesce into it; its title carries its own nominal date.
    app.drain().await;
    let first = str_at(&spring["runs"][0], "/id");
    let seen = app.board().get_run(&first).await.expect(200).body;
    assert_eq!(str_at(&seen, "/status"), "issue_created");
    let issue = app
        .board()
        .get_issue(&str_at(&seen, "/linkedIssueId"))
        .await
        .expect(200)
        .body;
    assert_eq!(str_at(&issue, "/title"), "Report 2026-03-29");
    for later in [&spring["runs"][1], &fall["runs"][0], &fall["runs"][1]] {
        let run = app
            .board()
            .get_run(&str_at(later, "/id"))
            .await
            .expect(200)
            .body;
        assert_eq!(str_at(&run, "/status"), "coalesced");
        assert_eq!(str_at(&run, "/coalescedIntoRunId"), first);
    }
}

#[tokio::test]
async fn backfill_is_bounded_validated_audited_and_follows_the_manual_run_access_rules() {
    nexus_tests::needs_servers!();
    let (app, _clock) = app_at("2026-11-29T11:00:00Z").await;
    let team = app.seed_team().await;
    let (routine, _) = schedule(
        &app,
        &team,
        json!({}),
        json!({ "cronExpression": "* * * * *" }),
    )
    .await;
    let board = app.board();
    let range = |from: &str, to: &str| json!({ "from": from, "to": to });
    board
        .backfill(
            &routine,
            &range("2026-11-29T10:00:00Z", "2026-11-29T10:00:00Z"),
        )
        .await
        .expect_error(422, "invalid_field");
    board
        .backfill(
            &routine,
            &range("2026-11-29T10:00:00Z", "2026-11-29T11:00:01Z"),
        )
        .await
        .expect_error(422, "invalid_field");
    // Past the retention period (30 days by default) runs may have been deleted: refused.
    let refused = board
        .backfill(
            &routine,
            &range("2026-10-30T10:59:59Z", "2026-10-30T11:01:00Z"),
        )
        .await
        .expect_error(422, "invalid_field");
    assert!(
        refused.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("retention")),
        "{}",
        refused.body
    );
    // 1,001 minutes of a minutely schedule: refused, nothing created; 1,000 are accepted.
    board
        .backfill(
            &routine,
            &range("2026-11-28T18:19:00Z", "2026-11-29T11:00:00Z"),
        )
        .await
        .expect_error(422, "backfill_too_large");
    assert!(runs(&app, &routine).await.is_empty());
    let done = board
        .backfill(
            &routine,
            &range("2026-11-28T18:20:00Z", "2026-11-29T11:00:00Z"),
        )
        .await
        .expect(202)
        .body;
    assert_eq!(done["runs"].as_array().map(Vec::len), Some(1000));
    // A trigger that is not a schedule trigger of the routine.
    let webhook = str_at(
        &app.seed_trigger(&routine, &json!({ "kind": "webhook" }))
            .await,
        "/trigger/id",
    );
    board
        .backfill(
            &routine,
            &json!({ "from": "2026-11-29T09:00:00Z", "to": "2026-11-29T09:01:00Z", "triggerId": webhook }),
        )
        .await
        .expect_error(422, "invalid_reference");
    // The assignee may; another agent of the company may not; the board may not once archived.
    let small = range("2026-11-27T09:00:00Z", "2026-11-27T09:02:00Z");
    let assignee = app.caller(Some(&team.key));
    assert_eq!(
        assignee.backfill(&routine, &small).await.expect(202).body["runs"]
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    let (_, other_key) = app.seed_agent(&team.company, "Other").await;
    app.caller(Some(&other_key))
        .backfill(&routine, &small)
        .await
        .expect(403);
    board
        .update_routine(&routine, &json!({ "status": "archived" }))
        .await
        .expect(200);
    board
        .backfill(&routine, &small)
        .await
        .expect_error(409, "routine_archived");
    board
        .backfill("00000000-0000-7000-8000-000000000000", &small)
        .await
        .expect(404);
    let activity = board.activity(&team.company, "").await.expect(200).body;
    let entries: Vec<&Value> = activity["activity"]
        .as_array()
        .expect("entries")
        .iter()
        .filter(|e| e["action"] == "routine.backfilled")
        .collect();
    assert_eq!(entries.len(), 2, "{activity}");
}
