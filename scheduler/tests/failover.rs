//! Two real `nexus-scheduler` processes on one Postgres and Redis: the leader is killed
//! (SIGKILL), the other takes over within the lease TTL, and the next fires happen exactly once.

use std::{
    collections::BTreeSet,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use chrono::{DateTime, DurationRound as _, TimeDelta, Utc};
use nexus_shared::{
    Store, SystemClock,
    crypto::SecretKey,
    db,
    model::{Actor, Label},
    schedule::{CronExpression, TimeZone},
    store::{NewTrigger, NewTriggerKind},
};
use nexus_tests::{TestDb, eventually, redis_url};

const TTL_SECS: u64 = 3;

/// A child process killed when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        drop(self.0.kill());
        drop(self.0.wait());
    }
}

fn spawn(db: &TestDb, prefix: &str, key: &SecretKey) -> Process {
    let child = Command::new(env!("CARGO_BIN_EXE_nexus-scheduler"))
        .env_clear()
        .env("NEXUS_DATABASE_URL", &db.url)
        .env("NEXUS_REDIS_URL", redis_url())
        .env("NEXUS_REDIS_PREFIX", prefix)
        .env("NEXUS_SECRET_KEY", key.to_base64())
        .env("NEXUS_LISTEN", "127.0.0.1:0")
        .env("NEXUS_LEADER_TTL_SECS", TTL_SECS.to_string())
        .env("NEXUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nexus-scheduler starts");
    Process(child)
}

async fn leader_value(
    redis: &mut redis::aio::MultiplexedConnection,
    prefix: &str,
) -> Option<String> {
    redis::cmd("GET")
        .arg(format!("{prefix}:scheduler:leader"))
        .query_async(redis)
        .await
        .ok()
        .flatten()
}

/// The process id inside a leader value `scheduler:<host>:<pid>:<nonce>`.
fn pid_of(value: &str) -> u32 {
    value
        .split(':')
        .nth(2)
        .and_then(|p| p.parse().ok())
        .expect("leader value names a pid")
}

async fn seed_minutely_routine(db: &TestDb, key: &SecretKey) -> uuid::Uuid {
    let store = Store::postgres(
        db::pool(&db.url, 2).expect("pool"),
        Arc::new(SystemClock),
        key,
    );
    let routine = nexus_tests::seed_store_routine(&store, "Minutely").await;
    let trigger = NewTrigger {
        kind: NewTriggerKind::Schedule {
            cron: CronExpression::parse("* * * * *").expect("cron"),
            zone: TimeZone::UTC,
            jitter: nexus_shared::model::JitterSec::parse(0).expect("jitter"),
        },
        label: Label::default(),
        enabled: true,
    };
    store
        .create_trigger(routine, trigger, Actor::System)
        .await
        .expect("trigger")
        .0
        .id
}

#[tokio::test]
async fn a_killed_leader_is_replaced_within_the_lease_and_fires_stay_exactly_once() {
    nexus_tests::needs_servers!();
    let db = TestDb::create().await;
    let key = SecretKey::generate();
    let prefix = format!("nexus-test:{}", uuid::Uuid::new_v4().simple());
    let trigger = seed_minutely_routine(&db, &key).await;
    let client = redis::Client::open(redis_url()).expect("redis url");
    let redis = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");

    let mut processes = vec![spawn(&db, &prefix, &key), spawn(&db, &prefix, &key)];
    let first = eventually(20, "a leader", || {
        let mut redis = redis.clone();
        let prefix = prefix.clone();
        async move { leader_value(&mut redis, &prefix).await }
    })
    .await;
    let leader_index = processes
        .iter()
        .position(|p| p.0.id() == pid_of(&first))
        .expect("leader is one of ours");
    let killed_at = Instant::now();
    let killed_wall = Utc::now();
    let mut leader = processes.remove(leader_index);
    leader.0.kill().expect("SIGKILL");
    drop(leader.0.wait());

    let second = eventually(20, "a new leader", || {
        let mut redis = redis.clone();
        let (prefix, first) = (prefix.clone(), first.clone());
        async move {
            leader_value(&mut redis, &prefix)
                .await
                .filter(|v| *v != first)
        }
    })
    .await;
    let takeover = killed_at.elapsed();
    assert_eq!(pid_of(&second), processes[0].0.id());
    // The lease lapses within the TTL and a standby tries every TTL / 3: a takeover is due
    // about 4 s after the kill. The bound leaves real processes on two loaded cores the same
    // again (a standby that waited for its minute-long safety sleep would still fail it).
    assert!(
        takeover <= Duration::from_secs(2 * TTL_SECS + 5),
        "took over after {takeover:?}"
    );

    // The next two minute boundaries after the kill fire exactly once each, with no gap since
    // the first fire of the run.
    let boundary = killed_wall
        .duration_trunc(TimeDelta::minutes(1))
        .expect("truncate")
        + TimeDelta::minutes(1);
    let wanted = boundary + TimeDelta::minutes(1);
    let fires: Vec<DateTime<Utc>> = eventually(150, "two fires after the kill", || {
        let pool = db.pool.clone();
        async move {
            let fires: Vec<DateTime<Utc>> = sqlx::query_scalar(
                "SELECT scheduled_for FROM routine_runs WHERE trigger_id = $1 AND status = 'received' ORDER BY scheduled_for",
            )
            .bind(trigger)
            .fetch_all(&pool)
            .await
            .expect("runs");
            fires.contains(&wanted).then_some(fires)
        }
    })
    .await;
    let distinct: BTreeSet<_> = fires.iter().collect();
    assert_eq!(distinct.len(), fires.len(), "no fire twice");
    assert!(fires.contains(&boundary) && fires.contains(&wanted));
    let first_fire = *fires.first().expect("fires");
    let minutes = (wanted - first_fire).num_minutes() + 1;
    assert_eq!(
        i64::try_from(fires.len()).ok(),
        Some(minutes),
        "no gap: {fires:?}"
    );
    let skipped: i64 =
        sqlx::query_scalar("SELECT count(*) FROM routine_runs WHERE status = 'skipped'")
            .fetch_one(&db.pool)
            .await
            .expect("count");
    assert_eq!(
        skipped, 0,
        "the takeover was within the misfire grace: nothing was missed"
    );
}
