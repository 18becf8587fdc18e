//! Notification fan-out: R routines with a `* * * * *` schedule whose agent is terminated, so
//! every fire of a minute boundary fails at dispatch (`agent_not_assignable`) and announces
//! `run.failed`. Measured twice on fresh databases, without and with one `webhook` channel
//! receiving `run.failed` (a local receiver that acknowledges every POST): the boundary's own
//! lateness (when each run was failed, p50/p99/max after the boundary), and, with the channel,
//! when the last notification reached the receiver. The outbox is written in the dispatch's
//! transaction, so the ratio of the two lateness figures is what channels cost the fire path.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_scheduler::{LeaderLock, Scheduler};
use nexus_shared::{
    Store, SystemClock,
    coord::Coordination,
    crypto::SecretKey,
    db,
    kv::Redis,
    model::{Actor, ChannelKind, ChannelName, NotificationEvent},
    store::{NewChannel, RoutineFilter},
};
use nexus_tests::redis_url;
use nexus_worker::Worker;
use tokio::sync::{Mutex, watch};

use crate::{
    cluster::Cluster,
    fleet::{COMPANY, Cron},
};

/// What one boundary came to.
struct Figures {
    failed: i64,
    p50: f64,
    p99: f64,
    max: f64,
    delivered: usize,
    last_delivery: Option<f64>,
    /// Reading a page of 500 routines with their health, after the boundary (p50 of 20).
    page_ms: f64,
}

pub(crate) async fn run(routines: usize, workers: usize, rounds: usize) -> anyhow::Result<()> {
    let routines = routines.clamp(1, 100_000);
    let rounds = rounds.clamp(1, 5);
    println!(
        "notification fan-out: {routines} routines `* * * * *`, every run fails at dispatch, worker concurrency {workers}, {rounds} rounds (without and with a channel, alternating)\n"
    );
    println!(
        "{:<6} {:<10} {:>7} {:>30} {:>9} {:>13} {:>12}",
        "round",
        "channels",
        "failed",
        "failure lateness p50/p99/max s",
        "delivered",
        "last told s",
        "page 500 ms"
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        // Alternate which goes first, so neither always meets a colder machine.
        let order = if round % 2 == 1 {
            [false, true]
        } else {
            [true, false]
        };
        let mut figures = [None, None];
        for channel in order {
            let f = boundary(routines, workers, channel).await?;
            println!(
                "{:<6} {:<10} {:>7} {:>30} {:>9} {:>13} {:>12}",
                round,
                if channel { "1 webhook" } else { "none" },
                f.failed,
                format!("{:.3}/{:.3}/{:.3}", f.p50, f.p99, f.max),
                f.delivered,
                f.last_delivery
                    .map_or_else(|| "-".to_owned(), |s| format!("{s:.2}")),
                format!("{:.1}", f.page_ms),
            );
            figures[usize::from(channel)] = Some(f);
        }
        if let [Some(without), Some(with)] = figures {
            ratios.push((with.p50 / without.p50, with.p99 / without.p99));
        }
    }
    for (round, (p50, p99)) in ratios.iter().enumerate() {
        println!(
            "round {}: failure lateness with/without a channel: p50 {p50:.2}, p99 {p99:.2}",
            round + 1
        );
    }
    Ok(())
}

async fn boundary(routines: usize, workers: usize, channel: bool) -> anyhow::Result<Figures> {
    let cluster = Cluster::new().await;
    let now = Utc::now();
    let mut first = now.duration_trunc(TimeDelta::minutes(1))? + TimeDelta::minutes(1);
    if first - now < TimeDelta::seconds(25) {
        first += TimeDelta::minutes(1);
    }
    crate::fleet::seed(&cluster.db, routines, Cron::EveryMinuteFrom(first)).await?;
    sqlx::query("UPDATE agents SET status = 'terminated' WHERE company_id = $1")
        .bind(COMPANY)
        .execute(&cluster.db.pool)
        .await?;
    let key = SecretKey::generate();
    let store = Store::postgres(
        db::pool(&cluster.db.url, u32::try_from(workers + 6)?)?,
        Arc::new(SystemClock),
        &key,
    );
    let received = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(None::<DateTime<Utc>>));
    if channel {
        let url = receiver(Arc::clone(&received), Arc::clone(&last)).await?;
        let new = NewChannel {
            name: ChannelName::parse("bench".to_owned()).map_err(anyhow::Error::msg)?,
            kind: ChannelKind::Webhook,
            url,
            events: vec![NotificationEvent::RunFailed],
            routine_ids: None,
            enabled: true,
        };
        store.create_channel(COMPANY, new, Actor::System).await?;
    }
    sqlx::query("CHECKPOINT").execute(&cluster.db.pool).await?;
    let redis = Redis::new(&redis_url(), cluster.prefix(), Arc::new(SystemClock))?;
    let scheduler = Scheduler::new(
        store.clone(),
        LeaderLock::new(
            Coordination::Redis(redis),
            "bench-scheduler".to_owned(),
            Duration::from_secs(15),
        ),
        nexus_scheduler::Settings::default(),
    );
    let settings = nexus_worker::Settings {
        concurrency: workers,
        allow_private_urls: true,
        ..Default::default()
    };
    let worker = Worker::new(store.clone(), "bench-worker".to_owned(), settings)?;
    let (stop, stopped) = watch::channel(false);
    let tasks = [
        tokio::spawn(scheduler.run(stopped.clone())),
        tokio::spawn(worker.run(stopped)),
    ];
    // Bounded: every run failed (and, with the channel, every notification received), or two
    // minutes after the boundary.
    let give_up = first + TimeDelta::seconds(120);
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let failed: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM routine_runs WHERE scheduled_for = $1 AND status = 'failed'",
        )
        .bind(first)
        .fetch_one(&cluster.db.pool)
        .await?;
        let all_failed = failed >= i64::try_from(routines)?;
        let all_told = !channel || received.load(Ordering::Relaxed) >= routines;
        if (all_failed && all_told) || Utc::now() > give_up {
            break;
        }
    }
    let _ = stop.send(true);
    for task in tasks {
        task.await?;
    }
    let (failed, p50, p99, max): (i64, f64, f64, f64) = sqlx::query_as(
        "SELECT count(*),
                coalesce(percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - scheduled_for)), 'NaN'),
                coalesce(percentile_cont(0.99) WITHIN GROUP (ORDER BY extract(epoch FROM completed_at - scheduled_for)), 'NaN'),
                coalesce(max(extract(epoch FROM completed_at - scheduled_for))::float8, 'NaN')
         FROM routine_runs WHERE scheduled_for = $1 AND status = 'failed'",
    )
    .bind(first)
    .fetch_one(&cluster.db.pool)
    .await?;
    let last_delivery = last.lock().await.map(|at| (at - first).as_seconds_f64());
    let mut page = Vec::with_capacity(20);
    for _ in 0..20 {
        let started = std::time::Instant::now();
        let filter = RoutineFilter {
            limit: 500,
            ..RoutineFilter::default()
        };
        let listed = store.routines(COMPANY, filter).await?;
        page.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(listed.iter().all(|r| r.last_run.is_some()), "health shown");
    }
    Ok(Figures {
        failed,
        p50,
        p99,
        max,
        delivered: received.load(Ordering::Relaxed),
        last_delivery,
        page_ms: {
            page.sort_by(f64::total_cmp);
            crate::machine::percentile(&page, 50.0)
        },
    })
}

/// A receiver on loopback that acknowledges every POST, counting them and noting the last.
async fn receiver(
    received: Arc<AtomicUsize>,
    last: Arc<Mutex<Option<DateTime<Utc>>>>,
) -> anyhow::Result<String> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/notify", listener.local_addr()?);
    let app = axum::Router::new().route(
        "/notify",
        axum::routing::post(move || {
            let (received, last) = (Arc::clone(&received), Arc::clone(&last));
            async move {
                received.fetch_add(1, Ordering::Relaxed);
                *last.lock().await = Some(Utc::now());
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    tokio::spawn(async move { drop(axum::serve(listener, app).await) });
    Ok(url)
}
