//! The operator console in a real headless Chromium, driven through WebDriver. Each test saves
//! screenshots of the pages it visits under `docs/console/` (docs/console.md shows them).

use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, Utc};
use nexus_shared::{ManualClock, clock::SharedClock, store::Leadership};
use nexus_tests::{Options, Proxy, TestApp, browser::Browser, str_at};
use serde_json::json;

fn shot(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../docs/console")
        .join(format!("{name}.png"))
}

/// Opens the console at `base` and signs in with `token`.
async fn signed_in(browser: &Browser, base: &str, token: &str) {
    browser.goto(base).await;
    browser.fill("#token", token).await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait("table.routines").await;
}

#[tokio::test]
async fn an_operator_signs_in_builds_a_routine_and_watches_its_runs_live() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_browser!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    // A channel with a delivery, for the channels page.
    app.board()
        .send(
            reqwest::Method::POST,
            &format!("/api/companies/{}/notification-channels", team.company),
            Some(&json!({"name": "On-call", "kind": "slack", "url": "http://127.0.0.1:9/hook", "events": ["run.failed"]})),
        )
        .await
        .expect(201);
    let proxy = Proxy::http(&app.base).await;
    let base = proxy.url.clone();
    let browser = Browser::start(1280, 1000).await;

    // A wrong token is refused, and nothing is kept.
    browser.goto(&base).await;
    browser.fill("#token", "not-a-token").await;
    browser.click("#sign-in button[type=submit]").await;
    browser
        .wait_text("#sign-in-error", "That token was refused.")
        .await;
    browser.screenshot(&shot("sign-in")).await;
    let kept = browser
        .run("return sessionStorage.getItem('nexus.token');", json!([]))
        .await;
    assert_eq!(kept, json!(null));
    // An agent key is not a board token.
    browser.fill("#token", &team.key).await;
    browser.click("#sign-in button[type=submit]").await;
    browser.wait_text("#sign-in-error", "agent key").await;
    assert!(
        !browser
            .run("return location.href;", json!([]))
            .await
            .to_string()
            .contains(&team.key),
        "the token never appears in the address"
    );

    signed_in(&browser, &base, &app.board_token).await;
    browser.wait_text("#live", "Live").await;

    // A routine through the form.
    browser.click("#new-routine").await;
    browser
        .fill("#routine-title", "Weekday standup notes")
        .await;
    browser.click("#save-settings").await;
    browser
        .wait_text("#routine-title-shown", "Weekday standup notes")
        .await;
    let routine = browser
        .run("return location.hash.split('/')[2];", json!([]))
        .await
        .as_str()
        .expect("the routine's id in the address")
        .to_owned();

    // A schedule, previewed as it is typed and validated by the server.
    browser.fill("#timezone", "Europe/Amsterdam").await;
    browser.fill("#cron", "0 9 * * 1-").await;
    browser.wait("#preview-error").await;
    browser.fill("#cron", "0 9 * * 1-5").await;
    browser
        .wait_text(
            "#preview-description",
            "weekdays at 09:00, Europe/Amsterdam",
        )
        .await;
    let previewed = browser
        .run(
            "return document.querySelectorAll('#preview-fires li').length;",
            json!([]),
        )
        .await;
    assert_eq!(previewed, json!(5));
    browser
        .screenshot_of("#add-schedule", &shot("schedule-preview"))
        .await;
    browser.click("#add-schedule-submit").await;
    browser
        .wait_text("#triggers", "weekdays at 09:00, Europe/Amsterdam")
        .await;
    // The next five fires are listed.
    browser.wait_count("#upcoming li", 5).await;

    // Run now with a payload: the run appears, then changes status, without a reload.
    browser
        .fill("#run-payload", r#"{"reason": "console test"}"#)
        .await;
    browser.click("#run-now-submit").await;
    browser.wait_text("#runs", "received").await;
    browser.run("window.notReloaded = true;", json!([])).await;
    app.drain().await;
    browser.wait_text("#runs", "issue created").await;
    assert_eq!(
        browser
            .run("return window.notReloaded === true;", json!([]))
            .await,
        json!(true),
        "the status changed in place"
    );
    let run = app.board().list_runs(&routine, "").await.expect(200).body["runs"][0]["id"]
        .as_str()
        .expect("a run")
        .to_owned();
    assert_eq!(
        app.board().get_run(&run).await.expect(200).body["payload"]["reason"],
        "console test"
    );
    browser.screenshot(&shot("routine")).await;

    // The run's page: its fields, issue with events, heartbeat run and trigger.
    browser.click(&format!("tr[data-run='{run}'] a")).await;
    browser.wait_text("#run-fields", "manual").await;
    browser.wait_text("#run-issue", "created").await;
    browser.wait_text("#run-heartbeat", "queued").await;
    browser.screenshot(&shot("run")).await;

    // Pause with a note, see it in the list, resume.
    browser.goto(&format!("{base}#/routine/{routine}")).await;
    browser.fill("#pause-note", "Holiday freeze").await;
    browser.click("#pause").await;
    browser
        .wait_text("#pause-note-shown", "Holiday freeze")
        .await;
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(
        (shown["status"].as_str(), shown["pauseNote"].as_str()),
        (Some("paused"), Some("Holiday freeze"))
    );
    browser.goto(&format!("{base}#/routines")).await;
    browser
        .wait_text(&format!("tr[data-id='{routine}']"), "Holiday freeze")
        .await;
    browser
        .wait_text(
            &format!("tr[data-id='{routine}']"),
            "weekdays at 09:00, Europe/Amsterdam",
        )
        .await;
    browser.screenshot(&shot("routines")).await;
    browser.goto(&format!("{base}#/routine/{routine}")).await;
    browser.click("#resume").await;
    browser.wait("#pause").await;
    assert_eq!(
        app.board().get_routine(&routine).await.expect(200).body["status"],
        "active"
    );

    // A webhook: URL and secret shown once; a rotation shows the new one, which copies.
    browser.choose("#signing-mode", "hmac_sha256").await;
    browser.click("#add-webhook-submit").await;
    let first_secret = browser.wait_text("#webhook-secret", "").await;
    assert!(!first_secret.is_empty());
    browser
        .click("tr[data-trigger] button[data-action='rotate']")
        .await;
    browser
        .wait_text("#secret-material", "Secret rotated.")
        .await;
    let rotated = browser
        .text("#webhook-secret")
        .await
        .expect("the new secret");
    assert_ne!(rotated, first_secret);
    browser.allow_clipboard().await;
    browser
        .click("#secret-material button[data-copy='secret']")
        .await;
    browser
        .wait_text("#secret-material button[data-copy='secret']", "Copied")
        .await;
    let copied = browser
        .run_async(
            "const done = arguments[arguments.length - 1];
             navigator.clipboard.readText().then(done, (e) => done('error: ' + e));",
            json!([]),
        )
        .await;
    assert_eq!(
        copied.as_str(),
        Some(rotated.as_str()),
        "the new secret was copied"
    );
    let trigger = str_at(
        &app.board().get_routine(&routine).await.expect(200).body,
        "/triggers/1/id",
    );
    let webhook = app.board().get_routine(&routine).await.expect(200).body["triggers"][1].clone();
    assert_eq!(webhook["id"], trigger.as_str());
    assert!(
        webhook["previousSecretExpiresAt"].is_string(),
        "the old secret has its grace period"
    );

    // Disable and enable the schedule, delete the webhook (after asking), backfill the last
    // two weeks (its weekday fires at 09:00 Amsterdam), edit the settings.
    let schedule = "tr[data-trigger] button[data-action='toggle']";
    browser.click(schedule).await;
    browser.wait_text("#triggers", "disabled").await;
    browser.click(schedule).await;
    // Redrawn (the table is read again after the change) before the next click.
    browser.wait_text(schedule, "Disable").await;
    nexus_tests::eventually(10, "the schedule enabled again", || async {
        let shown = app.board().get_routine(&routine).await.expect(200).body;
        (shown["triggers"][0]["enabled"] == true).then_some(())
    })
    .await;
    browser
        .click(&format!(
            "tr[data-trigger='{trigger}'] button[data-action='delete']"
        ))
        .await;
    browser
        .click(&format!(
            "tr[data-trigger='{trigger}'] button[data-action='confirm-delete']"
        ))
        .await;
    nexus_tests::eventually(10, "the webhook deleted", || async {
        let shown = app.board().get_routine(&routine).await.expect(200).body;
        (shown["triggers"].as_array().map(Vec::len) == Some(1)).then_some(())
    })
    .await;
    browser
        .run(
            "const local = (d) => new Date(d.getTime() - d.getTimezoneOffset() * 60000).toISOString().slice(0, 16);
             const now = new Date();
             document.querySelector('#backfill-from').value = local(new Date(now.getTime() - 14 * 86400000));
             document.querySelector('#backfill-to').value = local(new Date(now.getTime() - 60000));",
            json!([]),
        )
        .await;
    browser.click("#backfill button[type=submit]").await;
    let result = browser
        .wait_text("#backfill p[role=status]", "run(s) created")
        .await;
    let created: usize = result
        .split_whitespace()
        .next()
        .and_then(|n| n.parse().ok())
        .expect("a count");
    assert!(
        (9..=11).contains(&created),
        "two weeks of weekdays: {result}"
    );
    browser.wait_text("#runs", "catch-up").await;
    browser
        .fill("#routine-title", "Weekday standup summary")
        .await;
    browser.choose("#routine-priority", "high").await;
    browser.click("#save-settings").await;
    browser
        .wait_text("#routine-title-shown", "Weekday standup summary")
        .await;
    let shown = app.board().get_routine(&routine).await.expect(200).body;
    assert_eq!(
        (shown["title"].as_str(), shown["priority"].as_str()),
        (Some("Weekday standup summary"), Some("high"))
    );

    // Activity, channels, system.
    browser.goto(&format!("{base}#/activity")).await;
    browser.wait_text("#activity", "routine").await;
    browser.screenshot(&shot("activity")).await;
    browser.goto(&format!("{base}#/channels")).await;
    browser.wait_text("#view", "On-call").await;
    browser.screenshot(&shot("channels")).await;
    browser.goto(&format!("{base}#/system")).await;
    browser.wait("#system-figures").await;
    browser.wait("svg.chart").await;

    // The page says when the stream is down, and recovers.
    browser.goto(&format!("{base}#/routines")).await;
    browser.wait_text("#live", "Live").await;
    proxy.set_open(false);
    browser.wait_text("#live", "Disconnected").await;
    proxy.set_open(true);
    browser.wait_text("#live", "Live").await;

    // Archive asks first, then archives.
    browser.goto(&format!("{base}#/routine/{routine}")).await;
    browser.click("#archive").await;
    browser.wait("#archive-confirm").await;
    // A live update redraws the routine's head meanwhile: the open question stays open.
    app.board()
        .update_routine(&routine, &json!({"title": "Nightly digest, renamed"}))
        .await
        .expect(200);
    browser.wait_text("#routine-title-shown", "renamed").await;
    assert_eq!(
        browser
            .run(
                "return !document.getElementById('archive-confirm').hidden",
                json!([])
            )
            .await,
        json!(true),
        "a redraw by a live update closed the archive question"
    );
    assert_eq!(
        app.board().get_routine(&routine).await.expect(200).body["status"],
        "active",
        "nothing happens before the confirmation"
    );
    browser.click("#archive-yes").await;
    browser.wait_text("#view", "archived").await;
    assert_eq!(
        app.board().get_routine(&routine).await.expect(200).body["status"],
        "archived"
    );
}

#[tokio::test]
async fn the_routines_page_works_390_pixels_wide_and_shows_new_routines_live() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_browser!();
    let app = TestApp::spawn().await;
    let team = app.seed_team().await;
    for title in ["Morning digest", "Invoice sync", "Weekly report"] {
        let routine = app.seed_routine(&team, &json!({"title": title})).await;
        app.seed_trigger(
            &routine,
            &json!({"kind": "schedule", "cronExpression": "30 7 * * *", "timezone": "America/New_York"}),
        )
        .await;
    }
    let browser = Browser::start(390, 844).await;
    signed_in(&browser, &app.base, &app.board_token).await;
    browser.wait_text("table.routines", "Weekly report").await;
    // Narrow: the next fire in both zones stays; the trigger column gives way.
    browser
        .wait_text("table.routines", "7:30 AM America/New_York")
        .await;
    browser.wait_text("#live", "Live").await;
    let fits = browser
        .run(
            "return document.documentElement.scrollWidth <= window.innerWidth;",
            json!([]),
        )
        .await;
    assert_eq!(fits, json!(true), "nothing wider than the screen");

    // A routine made elsewhere appears without a reload.
    app.seed_routine(&team, &json!({"title": "Made through the API"}))
        .await;
    browser
        .wait_text("table.routines", "Made through the API")
        .await;
    browser.screenshot(&shot("routines-390px")).await;

    // Bulk pause of two selected routines, with a note; then the paused filter.
    let listed = app
        .board()
        .send(
            reqwest::Method::GET,
            &format!("/api/companies/{}/routines", team.company),
            None,
        )
        .await
        .expect(200)
        .body;
    let ids: Vec<String> = listed["routines"]
        .as_array()
        .expect("routines")
        .iter()
        .filter(|r| r["title"] != "Made through the API")
        .take(2)
        .map(|r| r["id"].as_str().expect("id").to_owned())
        .collect();
    for id in &ids {
        browser.click(&format!("input[data-routine='{id}']")).await;
    }
    browser.fill("#bulk-note", "Quarter close").await;
    browser.click("#bulk-pause").await;
    browser.wait_text("#view", "2 routines paused.").await;
    browser.choose("#filter-status", "paused").await;
    // The filtered list replaces the whole one: two rows, the paused ones with their note.
    browser.wait_count("table.routines tbody tr", 2).await;
    for id in &ids {
        browser
            .wait_text(&format!("tr[data-id='{id}']"), "Quarter close")
            .await;
    }
    browser.choose("#filter-status", "archived").await;
    browser
        .wait_text("table.routines", "No routines match.")
        .await;
}

#[tokio::test]
async fn the_system_page_shows_the_leader_the_queue_and_each_minutes_lateness() {
    nexus_tests::needs_servers!();
    nexus_tests::needs_browser!();
    let start: DateTime<Utc> = "2026-12-07T08:00:00Z".parse().expect("time");
    let clock = ManualClock::new(start);
    let shared: SharedClock = clock.clone();
    let app = TestApp::spawn_with(Options {
        clock: Some(shared),
        ..Default::default()
    })
    .await;
    let team = app.seed_team().await;
    for i in 0..10 {
        let routine = app
            .seed_routine(&team, &json!({"title": format!("Every minute {i}"), "concurrencyPolicy": "always_enqueue"}))
            .await;
        app.seed_trigger(
            &routine,
            &json!({"kind": "schedule", "cronExpression": "* * * * *"}),
        )
        .await;
    }
    let scheduler = app.scheduler("scheduler-0", std::time::Duration::from_secs(30));
    let leadership = Leadership {
        epoch: 4,
        leader_id: "scheduler-0".to_owned(),
    };
    // Half an hour of fires, each minute's handled and dispatched a little later than the last.
    for minute in 1..=30 {
        clock.set(start + TimeDelta::minutes(minute) + TimeDelta::milliseconds(200 * (minute % 7)));
        scheduler.fire_once(&leadership).await.expect("fire");
        clock.advance(TimeDelta::milliseconds(150 * (minute % 11)));
        app.drain().await;
    }
    clock.set(start + TimeDelta::minutes(31));
    // Two manual runs wait for a worker.
    let waiting = app.seed_routine(&team, &json!({"title": "Waiting"})).await;
    for _ in 0..2 {
        app.board()
            .run_routine(&waiting, &json!({}))
            .await
            .expect(202);
    }
    clock.advance(TimeDelta::seconds(12));

    let browser = Browser::start(1280, 1000).await;
    signed_in(&browser, &app.base, &app.board_token).await;
    browser.goto(&format!("{}/#/system", app.base)).await;
    browser.wait_text("#leader", "scheduler-0").await;
    browser.wait_text("#system-figures", "epoch 4").await;
    assert_eq!(browser.text("#queue-depth").await.as_deref(), Some("2"));
    browser.wait_text("#system-figures", "oldest 12.0 s").await;
    browser
        .wait_text("#system-figures", "300 fires, 300 measured")
        .await;
    let bars = browser
        .run(
            "return document.querySelectorAll('svg.chart rect.p99').length;",
            json!([]),
        )
        .await;
    assert_eq!(bars, json!(30), "one bar for each minute that fired");
    browser.screenshot(&shot("system")).await;
}

#[tokio::test]
async fn the_console_is_served_with_a_strict_policy_and_no_inline_script() {
    nexus_tests::needs_servers!();
    let app = TestApp::spawn().await;
    let http = nexus_tests::http_client();
    let policy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                  connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";
    for (path, kind) in [
        ("/", "text/html"),
        ("/console/console.js", "text/javascript"),
        ("/console/console.css", "text/css"),
    ] {
        let response = http
            .get(format!("{}{path}", app.base))
            .send()
            .await
            .expect("get");
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(
            headers["content-type"]
                .to_str()
                .expect("ascii")
                .starts_with(kind),
            "{path}"
        );
        assert_eq!(headers["content-security-policy"], policy, "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff");
        assert_eq!(headers["referrer-policy"], "no-referrer");
        assert_eq!(headers["x-frame-options"], "DENY");
    }
    let page = http
        .get(&app.base)
        .send()
        .await
        .expect("get")
        .text()
        .await
        .expect("text");
    assert!(page.contains("<label for=\"token\">Board token</label>"));
    // Every script has a source; no element carries an inline handler or style.
    assert_eq!(
        page.matches("<script").count(),
        page.matches("<script type=\"module\" src=\"/console/")
            .count()
    );
    for inline in [" onclick=", " onload=", " style=", "javascript:"] {
        assert!(!page.contains(inline), "{inline}");
    }
    // The sign-in form posts (never puts the token in an address).
    assert!(page.contains("<form id=\"sign-in\" class=\"card narrow\" method=\"post\""));
    // Nothing outside the console is served as a page.
    http.get(format!("{}/console/other.js", app.base))
        .send()
        .await
        .map(|r| assert_eq!(r.status(), 404))
        .expect("get");
}
