//! The console's routines page of a company with many routines (each with a schedule trigger
//! and a history of runs), served by `nexus serve` on Postgres: the server time of each request
//! the page makes, in the order it makes them (companies; agents and projects together; the
//! first page of routines), a page deep in the list (keyset paging), and — where Debian's
//! Chromium is installed — the time from navigation to the table drawn in a real browser.
//! Also what the console adds to the binary: the bytes of the three files compiled in.

use std::time::Instant;

use nexus_tests::browser::{self, Browser};
use serde_json::{Value, json};

use crate::{
    cluster::{BOARD, Cluster},
    fleet::{self, COMPANY, Cron},
    machine::percentile,
};

pub(crate) async fn run(routines: usize, loads: usize, runs: usize) -> anyhow::Result<()> {
    let routines = routines.clamp(100, 200_000);
    let loads = loads.clamp(10, 2_000);
    let runs = runs.clamp(0, 20);
    println!(
        "console: the routines page of one company with {routines} routines ({runs} finished runs each), {loads} loads\n"
    );
    let mut cluster = Cluster::new().await;
    fleet::seed(&cluster.db, routines, Cron::DailyTomorrow).await?;
    sqlx::query(
        "INSERT INTO routine_runs (id, company_id, routine_id, source, status, triggered_at, completed_at, updated_at)
         SELECT gen_random_uuid(), r.company_id, r.id, 'manual', CASE WHEN n % 4 = 0 THEN 'failed' ELSE 'completed' END,
                now() - n * interval '1 hour', now() - n * interval '1 hour' + interval '1 minute', now()
         FROM routines r CROSS JOIN generate_series(1, $1) AS n",
    )
    .bind(i64::try_from(runs)?)
    .execute(&cluster.db.pool)
    .await?;
    sqlx::raw_sql("ANALYZE").execute(&cluster.db.pool).await?;
    let api = cluster
        .start("nexus serve", "nexus", &["serve"], &[])
        .await?;
    // The seeded rows' changes are in the outbox: let the server number them first, so the
    // page is measured on a quiet log (its live part is not what this measures).
    loop {
        let waiting: i64 = sqlx::query_scalar("SELECT count(*) FROM event_outbox")
            .fetch_one(&cluster.db.pool)
            .await?;
        if waiting == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    let http = reqwest::Client::new();
    let get = |path: String| {
        let (http, api) = (http.clone(), api.clone());
        async move {
            let started = Instant::now();
            let response = http
                .get(format!("{api}{path}"))
                .bearer_auth(BOARD)
                .send()
                .await?;
            anyhow::ensure!(
                response.status().is_success(),
                "{path}: {}",
                response.status()
            );
            let body: Value = response.json().await?;
            Ok::<(Value, f64), anyhow::Error>((body, started.elapsed().as_secs_f64() * 1000.0))
        }
    };
    // The cursor of a page in the middle of the list.
    let mut deep = None;
    let mut listed = 0;
    while listed < routines / 2 {
        let path = match &deep {
            Some(before) => format!("/api/companies/{COMPANY}/routines?limit=500&before={before}"),
            None => format!("/api/companies/{COMPANY}/routines?limit=500"),
        };
        let (page, _) = get(path).await?;
        listed += page["routines"].as_array().map_or(0, Vec::len);
        deep = page["nextBefore"].as_str().map(str::to_owned);
    }
    let deep = deep.ok_or_else(|| anyhow::anyhow!("the list ended early"))?;

    let (mut companies, mut side, mut first, mut middle, mut page) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..loads {
        let started = Instant::now();
        let (_, took) = get("/api/companies".to_owned()).await?;
        companies.push(took);
        let agents = get(format!("/api/companies/{COMPANY}/agents"));
        let projects = get(format!("/api/companies/{COMPANY}/projects"));
        let (agents, projects) = tokio::try_join!(agents, projects)?;
        side.push(agents.1.max(projects.1));
        let (list, took) = get(format!("/api/companies/{COMPANY}/routines?limit=50")).await?;
        anyhow::ensure!(
            list["routines"].as_array().map(Vec::len) == Some(50)
                && list["routines"][0]["lastRun"].is_object()
                && list["routines"][0]["triggers"][0]["description"].is_string(),
            "a full page with health and plain-language schedules"
        );
        first.push(took);
        page.push(started.elapsed().as_secs_f64() * 1000.0);
        let (_, took) = get(format!(
            "/api/companies/{COMPANY}/routines?limit=50&before={deep}"
        ))
        .await?;
        middle.push(took);
    }
    println!(
        "{:<44} {:>9} {:>9} {:>9}",
        "request (ms, client-side on loopback)", "p50", "p99", "max"
    );
    for (name, values) in [
        ("GET /api/companies", &mut companies),
        ("GET agents + projects (together)", &mut side),
        ("GET routines?limit=50 (first page)", &mut first),
        ("the page's requests in sequence", &mut page),
        ("GET routines?limit=50 (middle of the list)", &mut middle),
    ] {
        values.sort_by(f64::total_cmp);
        println!(
            "{name:<44} {:>9.1} {:>9.1} {:>9.1}",
            percentile(values, 50.0),
            percentile(values, 99.0),
            values.last().copied().unwrap_or(f64::NAN)
        );
    }

    if browser::available() {
        let browser = Browser::start(1280, 1000).await;
        browser.goto(&api).await;
        browser
            .run(
                "sessionStorage.setItem('nexus.token', arguments[0]);",
                json!([BOARD]),
            )
            .await;
        let mut drawn = Vec::new();
        for load in 0..loads.min(50) {
            // A new document each time (the query differs), not a change of the fragment.
            browser.goto(&format!("{api}/?load={load}#/routines")).await;
            let count = "return document.querySelectorAll('table.routines tbody tr').length;";
            let ready = nexus_tests::within(30, || async {
                (browser.run(count, json!([])).await.as_u64() >= Some(50)).then_some(())
            })
            .await;
            if ready.is_none() {
                let shown = browser.text("#main").await;
                for line in browser.console_log().await {
                    println!("browser console: {line}");
                }
                anyhow::bail!("the table was not drawn within 30 s; the page shows {shown:?}");
            }
            let at = browser.run("return performance.now();", json!([])).await;
            drawn.push(at.as_f64().unwrap_or(f64::NAN));
        }
        drawn.sort_by(f64::total_cmp);
        println!(
            "{:<44} {:>9.1} {:>9.1} {:>9.1}",
            "Chromium: navigation to 50 rows drawn",
            percentile(&drawn, 50.0),
            percentile(&drawn, 99.0),
            drawn.last().copied().unwrap_or(f64::NAN)
        );
        println!("  (an upper bound: the page is polled for its rows every 20 ms)");
    } else {
        println!("Chromium is not installed: the browser figure is left out");
    }

    let files = nexus_api::console::FILES;
    let total: usize = files.iter().map(|(_, text)| text.len()).sum();
    println!("\nconsole compiled into the binary:");
    for (name, text) in files {
        println!("  {name:<12} {:>8} bytes", text.len());
    }
    println!(
        "  {:<12} {total:>8} bytes ({:.1} % of 1 MiB)",
        "total",
        total as f64 * 100.0 / 1_048_576.0
    );
    let binary = crate::cluster::binary("nexus")?;
    println!(
        "  the nexus binary it runs: {:.1} MiB",
        std::fs::metadata(&binary)?.len() as f64 / 1_048_576.0
    );
    cluster.print_memory();
    Ok(())
}
